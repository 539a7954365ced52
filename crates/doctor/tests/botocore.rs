//! Parsing and credential resolution compared with botocore itself (KEYWARD_TEST_PYTHON names a python
//! with the pinned botocore; `scripts/test` sets it up).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{botocore_python, dump_script, home_with, FakeEnv};
use keyward_doctor::ini;
use keyward_doctor::{
    config_profile_names, resolve, ChainError, ChainOutcome, CliVersion, Request,
};
use serde_json::{json, Map, Value};

fn run_python(py: &Path, args: &[&str], stdin: Option<&str>) -> Value {
    let mut child = Command::new(py)
        .arg(dump_script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// What `raw_config_parse` returns, computed from our parser.
fn our_sections(f: &ini::IniFile) -> Value {
    let mut sections = Map::new();
    for s in &f.sections {
        let mut opts = Map::new();
        for e in f.options(s) {
            let v = if e.is_nested() {
                let mut m = Map::new();
                for (k, v) in e
                    .nested()
                    .expect("no nested problems when botocore succeeds")
                {
                    m.insert(k, Value::String(v));
                }
                Value::Object(m)
            } else {
                Value::String(e.value.clone())
            };
            opts.insert(e.key.clone(), v);
        }
        sections.insert(s.name.clone(), Value::Object(opts));
    }
    Value::Object(sections)
}

#[test]
fn parser_matches_botocore_on_the_corpus() {
    let Some(py) = botocore_python() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "corpus too small");
    let args: Vec<String> = std::iter::once("parse".to_string())
        .chain(files.iter().map(|p| p.display().to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let theirs = run_python(&py, &args, None);
    let mut mismatches = Vec::new();
    for (path, t) in files.iter().zip(theirs.as_array().unwrap()) {
        let name = path.file_name().unwrap().to_string_lossy();
        let ours = ini::parse(path, &std::fs::read(path).unwrap());
        let ok = t["raw"]["ok"].as_bool().unwrap();
        if ours.botocore_fails() == ok {
            mismatches.push(format!(
                "{name}: botocore ok={ok}, ours problems={:?}",
                ours.problems
            ));
            continue;
        }
        if ok {
            let mine = our_sections(&ours);
            if mine != t["raw"]["sections"] {
                mismatches.push(format!(
                    "{name}: sections differ\n  botocore: {}\n  ours:     {}",
                    t["raw"]["sections"], mine
                ));
            }
            let mut theirs: Vec<String> = t["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            let mut mine = config_profile_names(&ours);
            theirs.sort();
            mine.sort();
            if mine != theirs {
                mismatches.push(format!(
                    "{name}: profiles botocore {theirs:?}, ours {mine:?}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

struct Scenario {
    name: &'static str,
    config: Option<&'static str>,
    credentials: Option<&'static [u8]>,
    env: &'static [(&'static str, &'static str)],
    profile: Option<&'static str>,
}

const K1: &str = "AKIARZPUZDIKGB2VALC4";

fn scenarios() -> Vec<Scenario> {
    macro_rules! s {
        ($name:expr, $config:expr, $creds:expr, $env:expr, $profile:expr) => {
            Scenario {
                name: $name,
                config: $config,
                credentials: $creds,
                env: $env,
                profile: $profile,
            }
        };
    }
    let keys: &[u8] = b"[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n[dev]\naws_access_key_id = AKIAY34FZKBOKMUTVV7A\naws_secret_access_key = devsecretdevsecretdevsecretdevsecret1234\n";
    let env_keys: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
    ];
    vec![
        s!("default profile from credentials", None, Some(keys), &[], None),
        s!("env keys beat AWS_PROFILE", None, Some(keys), &[("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2"), ("AWS_SECRET_ACCESS_KEY", "envsecret"), ("AWS_PROFILE", "dev")], None),
        s!("--profile disables env keys", None, Some(keys), env_keys, Some("dev")),
        s!("missing AWS_PROFILE fails even with env keys", None, Some(keys), &[("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2"), ("AWS_SECRET_ACCESS_KEY", "envsecret"), ("AWS_PROFILE", "nope")], None),
        s!("env key id without secret", None, Some(keys), &[("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2")], None),
        s!("env key id with empty secret", None, Some(keys), &[("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2"), ("AWS_SECRET_ACCESS_KEY", "")], None),
        s!("env secret without key id is skipped", None, Some(keys), &[("AWS_SECRET_ACCESS_KEY", "envsecret")], None),
        s!("empty env key id is skipped", None, Some(keys), &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "envsecret")], None),
        s!("profile with only a key id", None, Some(b"[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\n"), &[], None),
        s!("empty key id in file wins", None, Some(b"[default]\naws_access_key_id =\naws_secret_access_key = x\n"), &[], None),
        s!("token in config is dropped", Some("[default]\naws_session_token = tok\n"), Some(keys), &[], None),
        s!("aws_security_token beats aws_session_token", None, Some(b"[default]\naws_access_key_id = ASIARZPUZDIKGB2VALC4\naws_secret_access_key = s\naws_session_token = new\naws_security_token = old\n"), &[], None),
        s!("AWS_SECURITY_TOKEN beats AWS_SESSION_TOKEN", None, None, &[("AWS_ACCESS_KEY_ID", "ASIAENVENVENVENVENV2"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_SESSION_TOKEN", "new"), ("AWS_SECURITY_TOKEN", "old")], None),
        s!("keys in config file", Some("[profile dev]\naws_access_key_id = AKIAY34FZKBOKMUTVV7A\naws_secret_access_key = cfg\nregion = eu-west-1\n"), None, &[("AWS_PROFILE", "dev")], None),
        s!("credentials file beats config file", Some("[default]\naws_access_key_id = AKIACONFIGCONFIGCONF\naws_secret_access_key = cfg\n"), Some(keys), &[], None),
        s!("[profile dev] in credentials is not dev", None, Some(b"[profile dev]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], Some("dev")),
        s!("[profile dev] in credentials is 'profile dev'", None, Some(b"[profile dev]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], Some("profile dev")),
        s!("[dev] in config is not a profile", Some("[dev]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), None, &[], Some("dev")),
        s!("[DEFAULT] in credentials leaks into every profile", None, Some(b"[DEFAULT]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n[dev]\nregion = x\n"), &[], Some("dev")),
        s!("[Default] is not default", None, Some(b"[Default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], None),
        s!("v1 reads AWS_DEFAULT_PROFILE first", None, Some(keys), &[("AWS_DEFAULT_PROFILE", "dev"), ("AWS_PROFILE", "default")], None),
        s!("empty AWS_PROFILE", None, Some(keys), &[("AWS_PROFILE", "")], None),
        s!("BOM in credentials", None, Some(b"\xef\xbb\xbf[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], None),
        s!("BOM in config breaks env keys too", Some("\u{feff}[default]\nregion = x\n"), None, env_keys, None),
        s!("duplicate key", None, Some(b"[default]\naws_access_key_id = A\nAWS_ACCESS_KEY_ID = B\n"), &[], None),
        s!("indented secret joins the key id", None, Some(b"[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\n  aws_secret_access_key = s\n"), &[], None),
        s!("secret on the next line is a nested block", None, Some(b"[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key =\n    wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"), &[], None),
        s!("nothing anywhere", None, None, &[], None),
        s!("region from credentials file", Some("[default]\nregion = us-west-1\n"), Some(b"[default]\nregion = eu-north-1\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], None),
        s!("AWS_DEFAULT_REGION beats the profile", Some("[default]\nregion = us-west-1\n"), Some(keys), &[("AWS_DEFAULT_REGION", "ap-south-1")], None),
        s!("later [profile default] wins", Some("[default]\nregion = a\n[profile default]\nregion = b\n"), Some(keys), &[], None),
        s!("quoted profile name with space", Some("[profile \"b c\"]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), None, &[], Some("b c")),
        s!("custom file paths with $HOME", None, None, &[("AWS_SHARED_CREDENTIALS_FILE", "$HOME/.aws/other")], None),
        s!("inline comment stays in the secret", None, Some(b"[default]\naws_access_key_id = AKIARZPUZDIKGB2VALC4 # work\naws_secret_access_key = s ; x\n"), &[], None),
        s!("colon delimiter and CRLF", None, Some(b"[default]\r\naws_access_key_id: AKIARZPUZDIKGB2VALC4\r\naws_secret_access_key: s\r\n"), &[], None),
        // SSO is selected by sso_role_name or sso_account_id only, and then needs all four settings.
        s!("sso_start_url alone does not select SSO", Some("[profile dev]\nsso_start_url = https://x.awsapps.com/start\nsso_region = us-east-1\n"), Some(b"[dev]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], Some("dev")),
        s!("sso_session alone does not select SSO", Some("[profile dev]\nsso_session = s\n[sso-session s]\nsso_start_url = https://x.awsapps.com/start\nsso_region = us-east-1\n"), Some(b"[dev]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\naws_secret_access_key = s\n"), &[], Some("dev")),
        s!("sso_start_url alone, nothing else", Some("[profile a]\nsso_start_url = https://x.awsapps.com/start\n"), None, &[], Some("a")),
        s!("sso_account_id without the rest", Some("[profile dev]\nsso_account_id = 123456789012\n"), None, &[], Some("dev")),
        s!("sso_role_name beats credential_process but lacks the rest", Some("[profile dev]\nsso_role_name = R\ncredential_process = /bin/false\n"), None, &[], Some("dev")),
        // Role settings botocore refuses before it calls STS.
        s!("role_arn without a source", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\n"), None, &[], Some("r")),
        s!("source_profile that does not exist", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = nope\n"), None, &[], Some("r")),
        s!("source_profile and credential_source both", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = default\ncredential_source = Environment\n[default]\nregion = us-east-1\n"), None, &[], Some("r")),
        s!("credential_source not valid", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\ncredential_source = Bogus\n"), None, &[], Some("r")),
        s!("source profiles in a loop", Some("[profile a]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = b\n[profile b]\nrole_arn = arn:aws:iam::123456789012:role/y\nsource_profile = a\n"), None, &[], Some("a")),
        s!("source profile without credentials", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = b\n[profile b]\nregion = x\n"), None, &[], Some("r")),
        s!("source profile with a role and no source", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = b\n[profile b]\nrole_arn = arn:aws:iam::123456789012:role/y\n"), None, &[], Some("r")),
        s!("source profile with a key id only", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = src\n"), Some(b"[src]\naws_access_key_id = AKIARZPUZDIKGB2VALC4\n"), &[], Some("r")),
        // Web identity: each setting from its environment variable when set at all, else the
        // profile; a token file without a role ARN is refused.
        s!("web identity token file without a role ARN", Some("[default]\nweb_identity_token_file = /x/tok\n"), Some(keys), &[], None),
        s!("web identity token file from the environment, no role ARN", None, Some(keys), &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/x/tok")], None),
        s!("empty AWS_ROLE_ARN hides the profile's", Some("[default]\nrole_arn = arn:aws:iam::123456789012:role/p\nweb_identity_token_file = /x/tok\n"), Some(keys), &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/x/tok"), ("AWS_ROLE_ARN", "")], None),
        s!("empty AWS_WEB_IDENTITY_TOKEN_FILE hides the profile's", Some("[default]\nrole_arn = arn:aws:iam::123456789012:role/p\nweb_identity_token_file = /x/tok\n"), Some(keys), &[("AWS_WEB_IDENTITY_TOKEN_FILE", "")], None),
        // A role's credential_source with nothing to give.
        s!("credential_source Environment without env keys", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\ncredential_source = Environment\n"), None, &[], Some("r")),
        s!("credential_source Ec2InstanceMetadata with IMDS disabled", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\ncredential_source = Ec2InstanceMetadata\n"), None, &[], Some("r")),
        s!("credential_source EcsContainer without container variables", Some("[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\ncredential_source = EcsContainer\n"), None, &[], Some("r")),
        s!("sso_session naming no section", Some("[profile dev]\nsso_role_name = R\nsso_account_id = 123456789012\nsso_session = nope\n"), None, &[], Some("dev")),
    ]
}

fn ours_as_json(o: &ChainOutcome, region: Option<String>) -> Value {
    match o {
        ChainOutcome::Static(c) => json!({
            "ok": true,
            "method": c.provider.method(),
            "access_key": c.access_key_id.value,
            "secret_key": c.secret_access_key.value.expose(),
            "token": c.session_token.as_ref().map(|t| t.value.expose().to_string()),
            "region": region,
        }),
        ChainOutcome::Failed(e) => json!({"ok": false, "error": match e {
            ChainError::ParseError { .. } => "ConfigParseError",
            ChainError::ProfileNotFound { .. } => "ProfileNotFound",
            ChainError::Partial { .. } => "PartialCredentialsError",
            ChainError::NoCredentials => "NoCredentialsError",
            ChainError::LegacyFileMissing { .. } => "ConfigNotFound",
            ChainError::InvalidConfig { .. } => "InvalidConfigError",
            ChainError::InfiniteLoop { .. } => "InfiniteLoopConfigError",
            ChainError::CredentialRetrieval { .. } => "CredentialRetrievalError",
        }}),
        ChainOutcome::Deferred { provider, .. } => {
            json!({"ok": false, "error": format!("deferred {}", provider.method())})
        }
    }
}

#[test]
fn credential_resolution_matches_botocore() {
    let Some(py) = botocore_python() else { return };
    let scenarios = scenarios();
    let mut homes = Vec::new();
    let mut inputs = Vec::new();
    let mut ours = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let home = home_with(
            &format!("sc{i}"),
            sc.config.map(str::as_bytes),
            sc.credentials,
        );
        if sc.name.starts_with("custom file paths") {
            std::fs::write(
                home.path().join(".aws/other"),
                format!("[default]\naws_access_key_id = {K1}\naws_secret_access_key = other\n"),
            )
            .unwrap();
        }
        let mut vars: Vec<(&str, &str)> = sc.env.to_vec();
        let home_s = home.path().display().to_string();
        vars.push(("AWS_EC2_METADATA_DISABLED", "true"));
        let mut env = FakeEnv::new(home.path(), &vars);
        env.vars.insert("HOME".into(), home_s.clone());
        let mut py_env: serde_json::Map<String, Value> = env
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        py_env.insert("HOME".into(), Value::String(home_s));
        inputs.push(json!({"env": py_env, "profile": sc.profile}));
        let r = resolve(
            &Request {
                profile: sc.profile.map(str::to_string),
                cli: CliVersion::V1,
                ..Request::default()
            },
            &env,
        );
        ours.push(ours_as_json(&r.outcome, r.region.map(|s| s.value)));
        homes.push(home);
    }
    let theirs = run_python(&py, &["resolve"], Some(&Value::Array(inputs).to_string()));
    let mut mismatches = Vec::new();
    for ((sc, mine), t) in scenarios.iter().zip(&ours).zip(theirs.as_array().unwrap()) {
        if mine != t {
            mismatches.push(format!("{}:\n  botocore: {t}\n  ours:     {mine}", sc.name));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        scenarios.len(),
        mismatches.join("\n")
    );
}
