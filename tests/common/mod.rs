//! Shared by the root package's end-to-end tests: start the real `keyward serve` on a free loopback
//! port with fixed root credentials, and stop it when dropped.

#![allow(dead_code)] // each test crate uses a part of this module

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default account of every test server.
pub(crate) const ACCOUNT: &str = "123456789012";
/// Root access key id: AKIA + base32 of (account / 2 + 2^39) + 'A' (even account) + padding, so it
/// encodes [`ACCOUNT`].
pub(crate) const ROOT_KEY_ID: &str = "AKIARZPUZDIKAAAAAAAA";
/// Root secret (AWS's documentation example value).
pub(crate) const ROOT_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// A running `keyward serve`.
pub(crate) struct Process {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl Process {
    /// Starts `keyward serve` on `data_dir` with `extra` arguments; returns once it listens.
    pub(crate) fn start(data_dir: &Path, extra: &[String]) -> Process {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("KEYWARD_ROOT_ACCESS_KEY_ID", ROOT_KEY_ID)
            .env("KEYWARD_ROOT_SECRET_ACCESS_KEY", ROOT_SECRET)
            .env("KEYWARD_ACCOUNT_ID", ACCOUNT)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyward");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "keyward did not start");
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("keyward exited before listening"),
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new empty database on the throwaway PostgreSQL of `scripts/with-postgres`, as a URL; `None`
/// without that harness (a failure when `CI` is set, so CI never silently skips PostgreSQL).
pub(crate) fn fresh_postgres_database() -> Option<String> {
    let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "KEYWARD_TEST_DATABASE_URL is not set in CI: run the tests through scripts/test"
        );
        eprintln!(
            "NOTE: no PostgreSQL (run through scripts/with-postgres): PostgreSQL variant skipped"
        );
        return None;
    };
    let psql = std::env::var("KEYWARD_TEST_PSQL").unwrap_or_else(|_| "psql".into());
    let name = format!("kw_rs_{}_{}", std::process::id(), rand_suffix());
    let ok = Command::new(psql)
        .args(["-X", "-q", &base, "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("run psql")
        .success();
    assert!(ok, "CREATE DATABASE {name} failed");
    let (head, _) = base.rsplit_once('/').expect("database URL with a path");
    Some(format!("{head}/{name}"))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t * 1000 + N.fetch_add(1, Ordering::Relaxed)
}
