//! Test fixtures: a temporary home with AWS files, and an injected environment.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_doctor::Environment;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "keyward-doctor-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Environment variables, a home directory and a fixed clock.
pub struct FakeEnv {
    pub vars: HashMap<String, String>,
    pub home: PathBuf,
    pub now: SystemTime,
    pub tty: bool,
}

impl FakeEnv {
    pub fn new(home: &Path, vars: &[(&str, &str)]) -> Self {
        FakeEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            home: home.to_path_buf(),
            // 2025-01-01T00:00:00Z
            now: UNIX_EPOCH + Duration::from_secs(1_735_689_600),
            tty: false,
        }
    }
}

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn home_dir(&self) -> Option<PathBuf> {
        Some(self.home.clone())
    }
    fn now(&self) -> SystemTime {
        self.now
    }
    fn stdout_is_terminal(&self) -> bool {
        self.tty
    }
}

/// A home directory with `~/.aws/config` and `~/.aws/credentials` holding the given bytes (None: absent).
pub fn home_with(tag: &str, config: Option<&[u8]>, credentials: Option<&[u8]>) -> TempDir {
    let t = TempDir::new(tag);
    let aws = t.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    for (name, content) in [("config", config), ("credentials", credentials)] {
        if let Some(c) = content {
            let p = aws.join(name);
            std::fs::write(&p, c).unwrap();
            set_mode(&p, 0o600);
        }
    }
    t
}

#[cfg(unix)]
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
pub fn set_mode(_: &Path, _: u32) {}

/// The python with botocore, or `None` (after a loud note) when it is not configured locally.
/// Panics under CI, where a missing python must fail the run.
pub fn botocore_python() -> Option<PathBuf> {
    match std::env::var_os("KEYWARD_TEST_PYTHON") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.exists(),
                "KEYWARD_TEST_PYTHON={} does not exist",
                p.display()
            );
            Some(p)
        }
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but KEYWARD_TEST_PYTHON is not: the botocore comparison cannot be skipped in CI (run scripts/test)");
            }
            eprintln!();
            eprintln!("!!! SKIPPING the botocore comparison: KEYWARD_TEST_PYTHON is not set.");
            eprintln!("!!! Create it with: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt");
            eprintln!(
                "!!! then: KEYWARD_TEST_PYTHON=$PWD/.venv/bin/python cargo test -p keyward-doctor"
            );
            eprintln!();
            None
        }
    }
}

/// The repository's `tests/doctor/botocore_dump.py`.
pub fn dump_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/doctor/botocore_dump.py")
}
