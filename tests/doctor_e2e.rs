//! End-to-end tests of `keyward doctor` (the live probe) and `keyward rotate` against the real
//! `keyward serve` on a loopback port, both run as the real binary.

use keyward_doctor::aws::{xml_blocks, xml_text, Client, Credentials};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Process, ACCOUNT, ROOT_KEY_ID, ROOT_SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct Server {
    _process: Process,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, clock_offset: i64) -> Server {
        let process = Process::start(data_dir, &[format!("--clock-offset={clock_offset}")]);
        let url = process.url.clone();
        Server {
            _process: process,
            url,
        }
    }

    fn client(&self, service: &'static str, id: &str, secret: &str) -> Client {
        Client::new(
            &self.url,
            service,
            "us-east-1",
            Credentials {
                access_key_id: id.into(),
                secret_access_key: secret.into(),
                session_token: None,
            },
        )
        .expect("client")
    }

    fn iam(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.client("iam", ROOT_KEY_ID, ROOT_SECRET)
            .call(action, params)
            .unwrap_or_else(|e| panic!("{action}: {e}"))
            .xml
    }

    /// A new user with one key: (key id, secret).
    fn user_with_key(&self, name: &str) -> (String, String) {
        self.iam("CreateUser", &[("UserName", name)]);
        let xml = self.iam("CreateAccessKey", &[("UserName", name)]);
        (
            xml_text(&xml, "AccessKeyId").unwrap(),
            xml_text(&xml, "SecretAccessKey").unwrap(),
        )
    }

    /// (key id, status) of a user's keys (root's with `None`).
    fn keys(&self, user: Option<&str>) -> Vec<(String, String)> {
        let params: Vec<(&str, &str)> = user.map(|u| ("UserName", u)).into_iter().collect();
        let xml = self.iam("ListAccessKeys", &params);
        xml_blocks(&xml, "member")
            .into_iter()
            .map(|m| {
                (
                    xml_text(m, "AccessKeyId").unwrap(),
                    xml_text(m, "Status").unwrap(),
                )
            })
            .collect()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A home directory with `~/.aws/credentials` (mode 0600) and optionally `~/.aws/config`.
fn home(credentials: &str, config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp home");
    let aws = dir.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(aws.join("credentials"), credentials).unwrap();
    set_mode(&aws.join("credentials"), 0o600);
    if let Some(c) = config {
        std::fs::write(aws.join("config"), c).unwrap();
    }
    dir
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs the binary with a clean environment: only HOME, PATH and `env`.
fn run(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run keyward");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn doctor_json(home: &Path, url: &str) -> (i32, serde_json::Value, Run) {
    let r = run(home, &["doctor", "--json", "--endpoint-url", url], &[]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", r.stdout, r.stderr));
    (r.code, v, r)
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

fn profile(id: &str, secret: &str) -> String {
    format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n")
}

fn assert_no_secret(outputs: &[&Run], secrets: &[&str]) {
    for r in outputs {
        for s in secrets {
            assert!(
                !r.stdout.contains(s) && !r.stderr.contains(s),
                "a secret reached the output:\n{}\n{}",
                r.stdout,
                r.stderr
            );
        }
    }
}

#[test]
fn doctor_live_probe_findings() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let mut outputs = Vec::new();
    let mut secrets: Vec<String> = vec![ROOT_SECRET.into()];

    // Healthy: exit 0 and the identity in --json and in the text report.
    let (alice, alice_secret) = s.user_with_key("alice");
    secrets.push(alice_secret.clone());
    let h = home(&profile(&alice, &alice_secret), None);
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 0, "{}", r.stdout);
    assert_eq!(
        v["identity"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/alice")
    );
    assert_eq!(v["identity"]["account"], ACCOUNT);
    assert!(v["identity"]["user_id"]
        .as_str()
        .unwrap()
        .starts_with("AIDA"));
    assert_eq!(v["probe"]["endpoint"], s.url.as_str());
    let serious: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
    outputs.push(r);
    let text = run(h.path(), &["doctor", "--endpoint-url", &s.url], &[]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("arn:aws:iam::123456789012:user/alice"));
    assert!(text.stdout.contains("No problems found"));
    // Also through the profile's endpoint_url in ~/.aws/config.
    let h2 = home(
        &profile(&alice, &alice_secret),
        Some(&format!("[default]\nendpoint_url = {}\n", s.url)),
    );
    let r = run(h2.path(), &["doctor", "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    outputs.push(text);
    outputs.push(r);

    // Unknown, inactive and deleted keys: key-unknown.
    let unknown = "AKIARZPUZDIKQQQQQQQQ";
    let h = home(&profile(unknown, &alice_secret), None);
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 1);
    assert!(codes(&v).contains(&"key-unknown".into()), "{:?}", codes(&v));
    assert!(v["identity"].is_null());
    outputs.push(r);

    let (carol, carol_secret) = s.user_with_key("carol");
    secrets.push(carol_secret.clone());
    s.iam(
        "UpdateAccessKey",
        &[
            ("UserName", "carol"),
            ("AccessKeyId", &carol),
            ("Status", "Inactive"),
        ],
    );
    let h = home(&profile(&carol, &carol_secret), None);
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"key-unknown".into()),
        "inactive: {:?}",
        codes(&v)
    );
    outputs.push(r);
    s.iam(
        "DeleteAccessKey",
        &[("UserName", "carol"), ("AccessKeyId", &carol)],
    );
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"key-unknown".into()),
        "deleted: {:?}",
        codes(&v)
    );
    outputs.push(r);

    // Wrong secret: signature-mismatch.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    secrets.push(wrong.into());
    let h = home(&profile(&alice, wrong), None);
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"signature-mismatch".into()),
        "{:?}",
        codes(&v)
    );
    outputs.push(r);

    // A key of another account while the profile states the first: account-mismatch.
    let created = Command::new(BIN)
        .args(["account", "create", "other", "--data-dir"])
        .arg(data.path().join("d"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let created = String::from_utf8_lossy(&created.stdout).into_owned();
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("no {name} in {created}"))
            .to_string()
    };
    let (other_id, other_secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
    secrets.push(other_secret.clone());
    let h = home(
        &format!(
            "{}aws_account_id = {ACCOUNT}\n",
            profile(&other_id, &other_secret)
        ),
        None,
    );
    let (code, v, r) = doctor_json(h.path(), &s.url);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"account-mismatch".into()),
        "{:?}",
        codes(&v)
    );
    assert_eq!(v["identity"]["account"], field("account_id"));
    outputs.push(r);

    // Nothing listening: endpoint-unreachable.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let h = home(&profile(&alice, &alice_secret), None);
    let (code, v, r) = doctor_json(h.path(), &closed);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"endpoint-unreachable".into()),
        "{:?}",
        codes(&v)
    );
    outputs.push(r);

    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret(&outputs.iter().collect::<Vec<_>>(), &secrets);
}

#[test]
fn doctor_sees_clock_skew_and_expired_tokens() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("d");
    let a = Server::start(&dir, 0);
    let (dave, dave_secret) = a.user_with_key("dave");
    // A 900 s session from server A...
    let xml = a
        .client("sts", &dave, &dave_secret)
        .call("GetSessionToken", &[("DurationSeconds", "900")])
        .expect("GetSessionToken")
        .xml;
    let (tid, tsecret, token) = (
        xml_text(&xml, "AccessKeyId").unwrap(),
        xml_text(&xml, "SecretAccessKey").unwrap(),
        xml_text(&xml, "SessionToken").unwrap(),
    );
    // ...checked by server B on the same data, whose clock is two hours ahead.
    let b = Server::start(&dir, 7200);
    let h = home(
        &format!("{}aws_session_token = {token}\n", profile(&tid, &tsecret)),
        None,
    );
    let (code, v, r1) = doctor_json(h.path(), &b.url);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"token-expired".into()),
        "{:?}",
        codes(&v)
    );

    // A long-term key against the skewed server: refused as "Signature not yet current" → clock-skew.
    let h = home(&profile(&dave, &dave_secret), None);
    let (code, v, r2) = doctor_json(h.path(), &b.url);
    assert_eq!(code, 1);
    assert!(codes(&v).contains(&"clock-skew".into()), "{:?}", codes(&v));
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "clock-skew")
        .unwrap();
    assert_eq!(f["severity"], "error");
    assert!(
        f["message"].as_str().unwrap().contains("behind the server"),
        "{f}"
    );
    assert_eq!(
        v["probe"]["clock_skew_seconds"]
            .as_i64()
            .map(|s| (s + 7200).abs() < 60),
        Some(true)
    );
    // A server seven minutes ahead still accepts the key, and the doctor measures the skew from its
    // `Date` header: a warning, with the identity.
    let c = Server::start(&dir, 420);
    let (code, v, r3) = doctor_json(h.path(), &c.url);
    assert_eq!(code, 0, "{v}");
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "clock-skew")
        .unwrap_or_else(|| panic!("no clock-skew finding: {v}"));
    assert_eq!(f["severity"], "warning");
    assert!(
        v["identity"]["arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":user/dave")),
        "{v}"
    );
    assert_eq!(
        v["probe"]["clock_skew_seconds"]
            .as_i64()
            .map(|s| (s + 420).abs() < 30),
        Some(true),
        "{v}"
    );
    assert_no_secret(&[&r1, &r2, &r3], &[&tsecret, &token, &dave_secret]);
}

#[test]
fn doctor_live_is_fast() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let (id, secret) = s.user_with_key("fast");
    let h = home(&profile(&id, &secret), None);
    let mut best_live = Duration::MAX;
    let mut best_offline = Duration::MAX;
    for _ in 0..5 {
        let r = run(h.path(), &["doctor", "--endpoint-url", &s.url], &[]);
        assert_eq!(r.code, 0, "{}", r.stdout);
        best_live = best_live.min(r.elapsed);
        let r = run(h.path(), &["doctor", "--offline"], &[]);
        best_offline = best_offline.min(r.elapsed);
    }
    eprintln!("doctor live {best_live:?}, offline {best_offline:?} (best of 5, this build)");
    // The release binary takes well under 50 ms live; a debug build gets more room.
    assert!(best_live < Duration::from_millis(500), "{best_live:?}");
}

fn credentials_file(h: &Path) -> PathBuf {
    h.join(".aws/credentials")
}

fn key_in(text: &str, profile: &str) -> String {
    let mut in_section = false;
    for l in text.lines() {
        if l.starts_with('[') {
            in_section = l == format!("[{profile}]");
        } else if in_section {
            if let Some(v) = l.strip_prefix("aws_access_key_id = ") {
                return v.to_string();
            }
        }
    }
    panic!("no key for {profile} in {text}")
}

#[test]
fn rotate_writes_in_place_deactivates_and_handles_the_key_limit() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let (old, old_secret) = s.user_with_key("bob");
    let (other, other_secret) = s.user_with_key("eve");
    let original = format!(
        "# keys for work\n[other]\naws_access_key_id = {other}\naws_secret_access_key = {other_secret}\n\n\
         [default]\n; bob's key\naws_access_key_id = {old}\naws_secret_access_key = {old_secret}\n\
         aws_session_token = stale-token-from-last-week\nregion = eu-west-1\n"
    );
    let h = home(&original, None);
    let path = credentials_file(h.path());
    set_mode(&path, 0o640);

    // 1. Happy path: new key in the file, everything else kept, backup made, old key inactive.
    let r = run(h.path(), &["rotate", "--endpoint-url", &s.url], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let now = std::fs::read_to_string(&path).unwrap();
    let new1 = key_in(&now, "default");
    assert_ne!(new1, old);
    assert!(now.starts_with(&format!(
        "# keys for work\n[other]\naws_access_key_id = {other}\naws_secret_access_key = {other_secret}\n\n[default]\n; bob's key\n"
    )), "{now}");
    assert!(now.ends_with("region = eu-west-1\n"), "{now}");
    assert!(
        !now.contains("aws_session_token"),
        "stale token kept: {now}"
    );
    assert!(!now.contains(&old_secret));
    assert_eq!(mode(&path), 0o640);
    let backups: Vec<PathBuf> = std::fs::read_dir(h.path().join(".aws"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("credentials.keyward-backup-")
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), original);
    assert_eq!(mode(&backups[0]), 0o640);
    let mut keys = s.keys(Some("bob"));
    keys.sort_by_key(|k| k.0 != old);
    assert_eq!(
        keys,
        vec![
            (old.clone(), "Inactive".into()),
            (new1.clone(), "Active".into())
        ]
    );
    let new1_secret = now
        .lines()
        .filter_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .nth(1)
        .unwrap()
        .to_string();
    // The new key works for the doctor too.
    let d = run(h.path(), &["doctor", "--endpoint-url", &s.url], &[]);
    assert_eq!(d.code, 0, "{}", d.stdout);

    // 2. At the two-key limit without a terminal and without --yes: stop, change nothing.
    let r2 = run(h.path(), &["rotate", "--endpoint-url", &s.url], &[]);
    assert_eq!(r2.code, 1, "{}", r2.stdout);
    assert!(r2.stdout.contains("--yes"), "{}", r2.stdout);
    assert!(r2.stdout.contains(&old), "{}", r2.stdout);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), now);
    assert_eq!(s.keys(Some("bob")).len(), 2);

    // 3. With --yes the inactive extra key goes; with --delete-old the rotated one too.
    let r3 = run(
        h.path(),
        &["rotate", "--endpoint-url", &s.url, "--yes", "--delete-old"],
        &[],
    );
    assert_eq!(r3.code, 0, "{}\n{}", r3.stdout, r3.stderr);
    let after = std::fs::read_to_string(&path).unwrap();
    let new2 = key_in(&after, "default");
    assert_eq!(s.keys(Some("bob")), vec![(new2.clone(), "Active".into())]);
    assert_eq!(key_in(&after, "other"), other);
    assert_eq!(mode(&path), 0o640);
    let new2_secret = after
        .lines()
        .filter_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .nth(1)
        .unwrap()
        .to_string();

    assert_no_secret(
        &[&r, &d, &r2, &r3],
        &[
            &old_secret,
            &other_secret,
            &new1_secret,
            &new2_secret,
            "stale-token-from-last-week",
        ],
    );
}

#[test]
fn rotate_never_deletes_another_active_key_without_a_terminal_answer() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let (old, old_secret) = s.user_with_key("frank");
    let extra = xml_text(
        &s.iam("CreateAccessKey", &[("UserName", "frank")]),
        "AccessKeyId",
    )
    .unwrap();
    // Keys in ~/.aws/config this time (the config-file provider).
    let config = format!("[profile ci]\nregion = eu-west-1\naws_access_key_id = {old}\naws_secret_access_key = {old_secret}\n");
    let h = home("", Some(&config));
    let r = run(
        h.path(),
        &[
            "rotate",
            "--profile",
            "ci",
            "--endpoint-url",
            &s.url,
            "--yes",
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&extra) && r.stdout.contains("active"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Nothing was changed"), "{}", r.stdout);
    let mut keys = s.keys(Some("frank"));
    keys.sort();
    let mut want = vec![
        (old.clone(), "Active".to_string()),
        (extra.clone(), "Active".to_string()),
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(
        std::fs::read_to_string(h.path().join(".aws/config")).unwrap(),
        config
    );

    // Once the extra key is inactive, --yes removes it and the rotation goes through in the config file.
    s.iam(
        "UpdateAccessKey",
        &[
            ("UserName", "frank"),
            ("AccessKeyId", &extra),
            ("Status", "Inactive"),
        ],
    );
    let r2 = run(
        h.path(),
        &[
            "rotate",
            "--profile",
            "ci",
            "--endpoint-url",
            &s.url,
            "--yes",
        ],
        &[],
    );
    assert_eq!(r2.code, 0, "{}", r2.stdout);
    let now = std::fs::read_to_string(h.path().join(".aws/config")).unwrap();
    assert!(
        now.starts_with("[profile ci]\nregion = eu-west-1\naws_access_key_id = AKIA"),
        "{now}"
    );
    assert!(!now.contains(&old));
    let keys = s.keys(Some("frank"));
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&(old.clone(), "Inactive".into())), "{keys:?}");
    assert!(!keys.iter().any(|k| k.0 == extra), "{keys:?}");
    assert_no_secret(&[&r, &r2], &[&old_secret]);
}

#[test]
fn rotate_works_for_root() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let h = home(&profile(ROOT_KEY_ID, ROOT_SECRET), None);
    let path = credentials_file(h.path());
    let r = run(
        h.path(),
        &["rotate", "--endpoint-url", &s.url, "--delete-old"],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(":root"), "{}", r.stdout);
    let now = std::fs::read_to_string(&path).unwrap();
    let new = key_in(&now, "default");
    assert_ne!(new, ROOT_KEY_ID);
    assert_eq!(mode(&path), 0o600);
    assert!(!r.stdout.contains(ROOT_SECRET));
    let secret = now
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap();
    assert!(!r.stdout.contains(secret));
    let who = s
        .client("sts", &new, secret)
        .call("GetCallerIdentity", &[])
        .expect("new root key works")
        .xml;
    assert_eq!(
        xml_text(&who, "Arn").as_deref(),
        Some("arn:aws:iam::123456789012:root")
    );
}

#[test]
fn rotate_refuses_env_and_temporary_credentials() {
    let h = home("", None);
    let r = run(
        h.path(),
        &["rotate", "--endpoint-url", "http://127.0.0.1:9"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIARZPUZDIKQQQQQQQQ"),
            ("AWS_SECRET_ACCESS_KEY", ROOT_SECRET),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("environment variables"), "{}", r.stdout);
    assert!(r.stdout.contains("would not update"), "{}", r.stdout);

    let h = home(
        "[default]\naws_access_key_id = ASIARZPUZDIKQQQQQQQQ\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\naws_session_token = abc\n",
        None,
    );
    let r2 = run(
        h.path(),
        &["rotate", "--endpoint-url", "http://127.0.0.1:9"],
        &[],
    );
    assert_eq!(r2.code, 1, "{}", r2.stdout);
    assert!(r2.stdout.contains("temporary"), "{}", r2.stdout);
    assert_no_secret(&[&r, &r2], &[ROOT_SECRET]);
}

/// A file whose lines end in CR CR LF (converted to CRLF twice) is rewritten line for line as the
/// CLI reads it (it used to get the new key over the wrong lines, and no longer parsed); a key
/// inherited from `[DEFAULT]` is refused before any key is created.
#[test]
fn rotate_edits_odd_line_endings_and_refuses_inherited_keys_first() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(&data.path().join("d"), 0);
    let (old, old_secret) = s.user_with_key("rita");
    let (other, other_secret) = s.user_with_key("otto");
    let original = format!(
        "[default]\r\r\naws_access_key_id = {old}\r\r\naws_secret_access_key = {old_secret}\r\r\n\
         [other]\r\r\naws_access_key_id = {other}\r\r\naws_secret_access_key = {other_secret}\r\r\n"
    );
    let h = home(&original, None);
    let path = credentials_file(h.path());
    let r = run(h.path(), &["rotate", "--endpoint-url", &s.url], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let now = std::fs::read_to_string(&path).unwrap();
    let listed = s.iam("ListAccessKeys", &[("UserName", "rita")]);
    let new = listed
        .split("<AccessKeyId>")
        .skip(1)
        .filter_map(|p| p.split('<').next())
        .find(|k| *k != old)
        .unwrap()
        .to_string();
    assert!(
        now.contains(&format!("[default]\r\r\naws_access_key_id = {new}\r\r\n")),
        "{now:?}"
    );
    assert!(
        now.ends_with(&format!(
        "[other]\r\r\naws_access_key_id = {other}\r\r\naws_secret_access_key = {other_secret}\r\r\n"
    )),
        "{now:?}"
    );
    assert!(!now.contains(&old_secret));

    // A key that only [DEFAULT] holds: refused before CreateAccessKey.
    let (k, ksecret) = s.user_with_key("dora");
    let h = home(
        &format!("[DEFAULT]\naws_access_key_id = {k}\naws_secret_access_key = {ksecret}\n[default]\nregion = eu-west-1\n"),
        None,
    );
    let r = run(h.path(), &["rotate", "--endpoint-url", &s.url], &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("nothing was changed"), "{}", r.stdout);
    let keys = s.iam("ListAccessKeys", &[("UserName", "dora")]);
    assert_eq!(keys.matches("<AccessKeyId>").count(), 1, "{keys}");
    assert_no_secret(&[&r], &[&ksecret]);
}
