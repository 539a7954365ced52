//! One fixture per finding code that triggers it, and a healthy twin that does not.

mod common;

use common::{home_with, set_mode, FakeEnv};
use keyward_doctor::{
    diagnose, run_doctor, CliVersion, Code, DoctorArgs, Endpoint, Identity, ProbeOutcome, Prober,
    Report, ResolvedCredentials, Severity,
};

const K: &str = "AKIARZPUZDIKGB2VALC4"; // account 123456789012
const S: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const T: &str = "ASIAY34FZKBOKMUTVV7A"; // account 609629065308

#[derive(Clone, Default)]
struct Fixture {
    config: Option<String>,
    credentials: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    profile: Option<String>,
    cli: CliVersion,
    offline: bool,
    mode: Option<u32>,
}

fn base() -> Fixture {
    Fixture {
        config: Some("[default]\nregion = us-east-1\n".into()),
        credentials: Some(creds(K, S).into_bytes()),
        offline: true,
        ..Fixture::default()
    }
}

fn creds(k: &str, s: &str) -> String {
    format!("[default]\naws_access_key_id = {k}\naws_secret_access_key = {s}\n[dev]\naws_access_key_id = {K}\naws_secret_access_key = {S}\n")
}

impl Fixture {
    fn creds(mut self, c: impl Into<Vec<u8>>) -> Self {
        self.credentials = Some(c.into());
        self
    }
    fn config(mut self, c: &str) -> Self {
        self.config = Some(c.into());
        self
    }
    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    fn profile(mut self, p: &str) -> Self {
        self.profile = Some(p.into());
        self
    }
    fn run_with(&self, prober: Option<&dyn Prober>) -> Report {
        let home = home_with(
            "f",
            self.config.as_deref().map(str::as_bytes),
            self.credentials.as_deref(),
        );
        if let Some(m) = self.mode {
            set_mode(&home.path().join(".aws/credentials"), m);
        }
        let vars: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let env = FakeEnv::new(home.path(), &vars);
        let args = DoctorArgs {
            profile: self.profile.clone(),
            cli: self.cli,
            offline: self.offline,
            ..DoctorArgs::default()
        };
        if prober.is_some() {
            diagnose(&args, &env, prober)
        } else {
            let p = keyward_doctor::NotBuiltProber;
            diagnose(&args, &env, (!self.offline).then_some(&p as &dyn Prober))
        }
    }
    fn run(&self) -> Report {
        self.run_with(None)
    }
}

fn codes(r: &Report) -> Vec<Code> {
    r.findings.iter().map(|f| f.code).collect()
}

/// (code, triggers it, healthy twin)
fn table() -> Vec<(Code, Fixture, Fixture)> {
    let env_keys = |f: Fixture| {
        f.env("AWS_ACCESS_KEY_ID", K)
            .env("AWS_SECRET_ACCESS_KEY", S)
    };
    let asia = |tok: Option<&str>| {
        let mut c = format!("[default]\naws_access_key_id = {T}\naws_secret_access_key = {S}\n");
        if let Some(t) = tok {
            c.push_str(&format!("aws_session_token = {t}\n"));
        }
        base().creds(c)
    };
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(creds(K, S).as_bytes());
    let mut latin1 = creds(K, S).into_bytes();
    latin1.extend_from_slice(b"[x]\nregion = caf\xe9\n");
    vec![
        (Code::EnvOverridesProfile, env_keys(base()).env("AWS_PROFILE", "dev"), base().env("AWS_PROFILE", "dev")),
        (Code::ProfileNotFound, base().env("AWS_PROFILE", "deb"), base().env("AWS_PROFILE", "dev")),
        (Code::PartialCredentials, base().creds(format!("[default]\naws_access_key_id = {K}\n")), base()),
        (
            Code::InvalidConfig,
            base().config("[default]\nregion = us-east-1\nsso_account_id = 123456789012\n"),
            base().config("[default]\nregion = us-east-1\nsso_start_url = https://x.awsapps.com/start\n"),
        ),
        (Code::EmptyKeyId, base().creds(format!("[default]\naws_access_key_id =\naws_secret_access_key = {S}\n")), base()),
        (Code::KeyIdFormat, base().creds(creds("AKIA1234", S)), base()),
        (Code::SecretFormat, base().creds(creds(K, "tooshort")), base()),
        (Code::KeySecretSwapped, base().creds(creds(S, K)), base()),
        (Code::HiddenCharacters, env_keys(base()).env("AWS_SECRET_ACCESS_KEY", &format!("{S}\r")), env_keys(base())),
        (Code::HiddenCharacters, base().creds(creds(K, &format!("\"{S}\""))), base()),
        (Code::HiddenCharacters, base().creds(creds(&format!("{K} # work"), S)), base()),
        (Code::HiddenCharacters, base().creds(creds(K, &format!("{}\u{200b}{}", &S[..20], &S[20..]))), base()),
        (Code::Bom, base().creds(bom), base()),
        (Code::NotUtf8, base().creds(latin1), base()),
        (Code::DuplicateSection, base().creds(format!("{}[default]\nregion = x\n", creds(K, S))), base()),
        (Code::DuplicateKey, base().creds(format!("{}AWS_ACCESS_KEY_ID = {K}\n", creds(K, S))), base()),
        (Code::ContinuationLine, base().creds(format!("[default]\naws_access_key_id = {K}\n  aws_secret_access_key = {S}\n")), base()),
        (Code::ContinuationLine, base().creds(format!("[default]\naws_access_key_id = {K}\naws_secret_access_key =\n  {S}\n")), base()),
        (Code::NoSectionHeader, base().creds(format!("aws_access_key_id = {K}\n{}", creds(K, S))), base()),
        (Code::InvalidLine, base().creds(format!("{}just some text\n", creds(K, S))), base()),
        (Code::SectionName, base().creds(format!("{}[profile x]\nregion = y\n", creds(K, S))), base()),
        (Code::SectionName, base().config("[default]\nregion = us-east-1\n[dev]\nregion = eu-west-1\n"), base().config("[default]\nregion = us-east-1\n[profile dev]\nregion = eu-west-1\n")),
        (Code::SectionName, base().creds(format!("[Default]\naws_access_key_id = {K}\naws_secret_access_key = {S}\n")), base()),
        (Code::SectionName, base().config("[default]\nregion = us-east-1\n[profile a b]\nregion = x\n"), base().config("[default]\nregion = us-east-1\n[profile \"a b\"]\nregion = x\n")),
        (Code::DefaultProfileConflict, base().config("[default]\nregion = us-east-1\n[profile default]\nregion = eu-west-1\n"), base()),
        (Code::MisspelledKey, base().creds(format!("{}[x]\naws_access_key = {K}\n", creds(K, S))), base()),
        (Code::TokenInOtherFile, base().config("[default]\nregion = us-east-1\naws_session_token = tok\n"), base()),
        (Code::TokenOnLongTermKey, base().creds(format!("{}aws_session_token = stale\n", creds(K, S).split("[dev]").next().unwrap())), base()),
        (Code::TokenOnLongTermKey, env_keys(base()).env("AWS_SESSION_TOKEN", "stale"), env_keys(base())),
        (Code::TemporaryKeyWithoutToken, asia(None), asia(Some("tok"))),
        (Code::ConflictingTokenVars, base().env("AWS_ACCESS_KEY_ID", T).env("AWS_SECRET_ACCESS_KEY", S).env("AWS_SECURITY_TOKEN", "a").env("AWS_SESSION_TOKEN", "b"), base().env("AWS_ACCESS_KEY_ID", T).env("AWS_SECRET_ACCESS_KEY", S).env("AWS_SESSION_TOKEN", "b")),
        (Code::CredentialsExpired, env_keys(base()).env("AWS_CREDENTIAL_EXPIRATION", "2024-12-31T23:00:00Z"), env_keys(base()).env("AWS_CREDENTIAL_EXPIRATION", "2025-01-01T01:00:00Z")),
        (Code::FilePermissions, Fixture { mode: Some(0o644), ..base() }, Fixture { mode: Some(0o600), ..base() }),
        (Code::FileUnreadable, Fixture { credentials: None, cli: CliVersion::V1, ..base() }.env("AWS_CREDENTIAL_FILE", "/nonexistent/keyward"), Fixture { cli: CliVersion::V1, ..base() }),
        (Code::EndpointOverride, base().env("AWS_ENDPOINT_URL", "http://localhost:4566"), base()),
        (Code::EndpointOverride, base().config("[default]\nregion = us-east-1\nservices = local\n[services local]\nsts =\n  endpoint_url = http://localhost:4566\n"), base()),
        (Code::AccountMismatch, env_keys(base()).env("AWS_ACCOUNT_ID", "111111111111"), env_keys(base()).env("AWS_ACCOUNT_ID", "123456789012")),
        // botocore reads AWS_ACCOUNT_ID only with keys from the environment.
        (Code::AccountMismatch, env_keys(base()).env("AWS_ACCOUNT_ID", "111111111111"), base().env("AWS_ACCOUNT_ID", "111111111111")),
        (Code::AccountMismatch, base().creds(format!("[default]\naws_access_key_id = {K}\naws_secret_access_key = {S}\naws_account_id = 111111111111\n")), base().creds(format!("[default]\naws_access_key_id = {K}\naws_secret_access_key = {S}\naws_account_id = 123456789012\n"))),
        // ... and aws_account_id only from the section that holds the keys.
        (Code::AccountMismatch, base().creds(format!("[default]\naws_access_key_id = {K}\naws_secret_access_key = {S}\naws_account_id = 111111111111\n")), base().config("[default]\nregion = us-east-1\naws_account_id = 111111111111\n")),
        (Code::InvalidRegion, base().config("[default]\nregion = us-west-2 # prod\n"), base()),
        (Code::InvalidRegion, base().env("AWS_DEFAULT_REGION", ""), base().env("AWS_DEFAULT_REGION", "eu-west-1")),
        // CLI v1 with an endpoint URL needs a region (without one it uses the global endpoints).
        (Code::InvalidRegion, Fixture { config: Some("[default]\nendpoint_url = http://localhost:4566\n".into()), cli: CliVersion::V1, ..base() }, Fixture { config: Some("[default]\n".into()), cli: CliVersion::V1, ..base() }),
        (Code::NoCredentials, Fixture { credentials: None, ..base() }.env("AWS_EC2_METADATA_DISABLED", "true"), base()),
        (Code::ProviderNotChecked, base().config("[default]\nregion = us-east-1\n[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = default\n").profile("r"), base()),
        (Code::ProbeUnavailable, Fixture { offline: false, ..base() }, base()),
    ]
}

#[test]
fn every_case_triggers_its_code_and_its_twin_does_not() {
    let mut failures = Vec::new();
    for (i, (code, bad, good)) in table().into_iter().enumerate() {
        let b = bad.run();
        if !codes(&b).contains(&code) {
            failures.push(format!(
                "case {i} ({code}): not triggered; got {:?}",
                codes(&b)
            ));
        }
        let g = good.run();
        if codes(&g).contains(&code) {
            failures.push(format!(
                "case {i} ({code}): healthy twin triggers it: {:?}",
                g.findings
            ));
        }
        if g.has_errors() {
            failures.push(format!(
                "case {i} ({code}): healthy twin has errors: {:?}",
                g.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A value that starts on the next line as indented `key = value` pairs is a nested block to
/// botocore (a map), which the CLI cannot use as a region or a key: an error, where a nested block
/// under `s3` (what nesting is for) is not.
#[test]
fn nested_blocks_where_a_value_belongs_are_errors() {
    let nested = base().config("[default]\nregion =\n  us-east-1 = x\n");
    // The table shows the joined text escaped, on one line.
    let (_, text) = run_cli(&nested, false, |_| {});
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("region "))
        .unwrap();
    assert!(row.contains("\\nus-east-1 = x"), "{row}");
    let bad = nested.run();
    let f = bad
        .findings
        .iter()
        .find(|f| f.code == Code::ContinuationLine)
        .expect("a continuation-line finding");
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("nested block"), "{}", f.message);
    let keys = base()
        .creds(format!(
            "[default]\naws_access_key_id =\n  a = b\naws_secret_access_key = {S}\n"
        ))
        .run();
    assert!(codes(&keys).contains(&Code::ContinuationLine));
    let fine = base()
        .config("[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 20\n")
        .run();
    assert!(
        !codes(&fine).contains(&Code::ContinuationLine),
        "{:?}",
        codes(&fine)
    );
}

#[test]
fn every_offline_code_has_a_case() {
    let covered: Vec<Code> = table().into_iter().map(|(c, _, _)| c).collect();
    let live = [
        Code::KeyUnknown,
        Code::SignatureMismatch,
        Code::TokenExpired,
        Code::ClockSkew,
        Code::EndpointUnreachable,
    ];
    for c in Code::ALL {
        if !live.contains(c) {
            assert!(covered.contains(c), "no fixture for {c}");
        }
    }
}

struct FakeProber(ProbeOutcome);
impl Prober for FakeProber {
    fn probe(&self, _: &ResolvedCredentials, _: &Endpoint) -> ProbeOutcome {
        self.0.clone()
    }
}

#[test]
fn live_codes_come_through_the_probe_seam() {
    let f = Fixture {
        offline: false,
        ..base()
    };
    for (outcome, code) in [
        (
            ProbeOutcome::Rejected {
                code: Code::KeyUnknown,
                aws_error: "InvalidClientTokenId".into(),
                message: "x".into(),
            },
            Code::KeyUnknown,
        ),
        (
            ProbeOutcome::Rejected {
                code: Code::SignatureMismatch,
                aws_error: "SignatureDoesNotMatch".into(),
                message: "x".into(),
            },
            Code::SignatureMismatch,
        ),
        (
            ProbeOutcome::Rejected {
                code: Code::TokenExpired,
                aws_error: "ExpiredToken".into(),
                message: "x".into(),
            },
            Code::TokenExpired,
        ),
        (
            ProbeOutcome::ClockSkew { skew_seconds: 900 },
            Code::ClockSkew,
        ),
        (
            ProbeOutcome::Unreachable {
                reason: "connection refused".into(),
            },
            Code::EndpointUnreachable,
        ),
    ] {
        let r = f.run_with(Some(&FakeProber(outcome)));
        assert!(codes(&r).contains(&code), "{code}: {:?}", r.findings);
        assert!(r.has_errors());
    }
    let id = Identity {
        account: "123456789012".into(),
        arn: "arn:aws:iam::123456789012:user/a".into(),
        user_id: "AIDAX".into(),
    };
    let r = f.run_with(Some(&FakeProber(ProbeOutcome::Identity(id.clone()))));
    assert_eq!(r.identity, Some(id));
    assert!(!r.has_errors());
}

/// A prober that reports several outcomes at once (an identity and a measured clock skew).
struct MultiProber(Vec<ProbeOutcome>);
impl Prober for MultiProber {
    fn probe(&self, _: &ResolvedCredentials, _: &Endpoint) -> ProbeOutcome {
        self.0[0].clone()
    }
    fn probe_all(
        &self,
        _: &ResolvedCredentials,
        _: &Endpoint,
        _: Option<&str>,
    ) -> Vec<ProbeOutcome> {
        self.0.clone()
    }
}

#[test]
fn clock_skew_is_reported_even_when_the_call_works() {
    let f = Fixture {
        offline: false,
        ..base()
    };
    let id = Identity {
        account: "123456789012".into(),
        arn: "arn:aws:iam::123456789012:user/a".into(),
        user_id: "AIDAX".into(),
    };
    for (skew, expected) in [
        (20, None),
        (-299, None),
        (400, Some(Severity::Warning)),
        (-600, Some(Severity::Warning)),
        (1000, Some(Severity::Error)),
        (-7200, Some(Severity::Error)),
    ] {
        let p = MultiProber(vec![
            ProbeOutcome::Identity(id.clone()),
            ProbeOutcome::ClockSkew { skew_seconds: skew },
        ]);
        let r = f.run_with(Some(&p));
        assert_eq!(r.identity.as_ref(), Some(&id));
        assert_eq!(r.probe.as_ref().unwrap().clock_skew_seconds, Some(skew));
        let got = r
            .findings
            .iter()
            .find(|f| f.code == Code::ClockSkew)
            .map(|f| f.severity);
        assert_eq!(got, expected, "skew {skew}");
    }
    // The identity names another account than the profile states: account-mismatch from the probe.
    let other = Identity {
        account: "999999999999".into(),
        ..id
    };
    let f = f.creds(format!(
        "[default]\naws_access_key_id = {K}\naws_secret_access_key = {S}\naws_account_id = 123456789012\n"
    ));
    let r = f.run_with(Some(&MultiProber(vec![ProbeOutcome::Identity(other)])));
    assert!(
        codes(&r).contains(&Code::AccountMismatch),
        "{:?}",
        r.findings
    );
}

fn run_cli(f: &Fixture, json: bool, extra: impl Fn(&mut DoctorArgs)) -> (i32, String) {
    let home = home_with(
        "cli",
        f.config.as_deref().map(str::as_bytes),
        f.credentials.as_deref(),
    );
    let vars: Vec<(&str, &str)> = f
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let env = FakeEnv::new(home.path(), &vars);
    let mut args = DoctorArgs {
        offline: f.offline,
        json,
        profile: f.profile.clone(),
        ..DoctorArgs::default()
    };
    extra(&mut args);
    let mut out = Vec::new();
    let code = run_doctor(&args, &env, &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn exit_codes_and_json_shape() {
    let (code, out) = run_cli(&base(), false, |_| {});
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No problems found"), "{out}");
    assert!(out.contains("****************ALC4"), "{out}");
    assert!(out.contains(".aws/credentials:2:21"), "{out}");

    let (code, out) = run_cli(&base().env("AWS_PROFILE", "nope"), true, |_| {});
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["identity"].is_null());
    assert_eq!(v["findings"][0]["code"], "profile-not-found");
    assert_eq!(v["findings"][0]["severity"], "error");
    assert!(v["credentials"]["values"].is_array());
    assert_eq!(
        v["credentials"]["error"],
        "The config profile (nope) could not be found"
    );

    let (code, _) = run_cli(&base(), false, |a| {
        a.endpoint_url = Some("localhost:4566".into())
    });
    assert_eq!(code, 2);
}

#[test]
fn secrets_never_reach_the_output() {
    let secret_token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDtoken";
    let cases = vec![
        base(),
        base().creds(creds(S, K)),
        base().creds(creds(K, &format!("\"{S}\""))),
        base().creds(creds(K, &format!("{S} # old"))),
        Fixture { credentials: Some(format!("[default]\naws_access_key_id = {T}\naws_secret_access_key = {S}\naws_session_token = {secret_token}\n").into_bytes()), ..base() },
        base().env("AWS_ACCESS_KEY_ID", K).env("AWS_SECRET_ACCESS_KEY", &format!("{S}\r")).env("AWS_SESSION_TOKEN", secret_token),
        base().creds(format!("[default]\naws_access_key_id = {K}\n  aws_secret_access_key = {S}\n")),
        base().creds(format!("[default]\naws_access_key_id = {K}\naws_secret_access_key =\n  {S}\n")),
    ];
    for f in cases {
        for json in [false, true] {
            let (_, out) = run_cli(&f, json, |_| {});
            for s in [S, &S[..36], secret_token] {
                assert!(!out.contains(s), "secret leaked:\n{out}");
            }
        }
    }
}

#[test]
fn profile_flag_ignores_env_keys_and_says_so() {
    let f = base()
        .env("AWS_ACCESS_KEY_ID", "AKIAENVENVENVENVENV2")
        .env("AWS_SECRET_ACCESS_KEY", S)
        .profile("dev");
    let r = f.run();
    let e = r
        .findings
        .iter()
        .find(|x| x.code == Code::EnvOverridesProfile)
        .unwrap();
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(r.credentials.provider, Some("shared-credentials-file"));
}

#[test]
fn offline_run_is_fast() {
    let home = home_with(
        "fast",
        Some(b"[default]\nregion = us-east-1\n"),
        Some(creds(K, S).as_bytes()),
    );
    let env = FakeEnv::new(home.path(), &[]);
    let args = DoctorArgs {
        offline: true,
        ..DoctorArgs::default()
    };
    let start = std::time::Instant::now();
    for _ in 0..10 {
        let mut out = Vec::new();
        run_doctor(&args, &env, &mut out);
    }
    let each = start.elapsed() / 10;
    assert!(
        each < std::time::Duration::from_millis(20),
        "{each:?} per run"
    );
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    let home = home_with("tty", None, Some(b"[default]\naws_access_key_id = x\n"));
    let args = DoctorArgs {
        offline: true,
        ..DoctorArgs::default()
    };
    for (tty, no_color, expect) in [
        (true, None, true),
        (true, Some("1"), false),
        (false, None, false),
    ] {
        let mut vars = vec![];
        if let Some(v) = no_color {
            vars.push(("NO_COLOR", v));
        }
        let mut env = FakeEnv::new(home.path(), &vars);
        env.tty = tty;
        let mut out = Vec::new();
        assert_eq!(run_doctor(&args, &env, &mut out), 1);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out.contains("\x1b["),
            expect,
            "tty={tty} NO_COLOR={no_color:?}\n{out}"
        );
    }
}
