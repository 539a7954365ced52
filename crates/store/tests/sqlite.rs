//! The SQLite engine: the shared suite, plus what only a file on disk can show (persistence,
//! permissions, no clear secret in the file, two handles on one file).

mod suite;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_store::{KeyStatus, MasterKey, Store, StoreError, StoreOptions};

const MASTER: [u8; 32] = [0x5a; 32];

async fn open(path: &Path) -> Store {
    open_with(path, MasterKey::from_bytes(MASTER)).await
}

async fn open_with(path: &Path, master: MasterKey) -> Store {
    Store::open_sqlite_with(
        path,
        master,
        StoreOptions::default().usage_flush_interval(None),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("keyward.db")).await;
    suite::test_suite(&store).await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_handles_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let a = open(&path).await;
    let b = open(&path).await;
    suite::two_handles(&a, &b).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn database_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    store.create_account("perm", None).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("keyward.db{suffix}"));
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store
        .create_account("persist", Some("111122223333"))
        .await
        .unwrap();
    store
        .create_user(&acct.id, "pat", "/p/", &[keyward_store::Tag::new("a", "b")])
        .await
        .unwrap();
    let (k, secret) = store
        .create_access_key(&acct.id, Some("pat"))
        .await
        .unwrap();
    store
        .update_access_key_status(&acct.id, Some("pat"), &k.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
    store
        .create_account_alias(&acct.id, "persist-co")
        .await
        .unwrap();
    let when = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    store.record_key_use(&k.key_id, when, "s3", "eu-central-1");
    let stamp = store.change_stamp().await.unwrap();
    // Drop without flushing usage: acknowledged writes are on disk; the pending use is not.
    drop(store);

    let store = open(&path).await;
    assert_eq!(
        store.get_account("111122223333").await.unwrap(),
        Some(acct.clone())
    );
    let user = store.get_user(&acct.id, "PAT").await.unwrap().unwrap();
    assert_eq!(user.path, "/p/");
    assert_eq!(user.tags.len(), 1);
    let (k2, s2) = store.get_access_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!(k2, k.clone().with_status(KeyStatus::Inactive));
    assert_eq!(s2.expose(), secret.expose());
    assert_eq!(
        store.list_account_aliases(&acct.id).await.unwrap(),
        ["persist-co"]
    );
    assert_eq!(store.change_stamp().await.unwrap(), stamp);
    assert_eq!(
        store
            .get_access_key_last_used(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .1,
        None
    );

    // close() flushes usage.
    store.record_key_use(&k.key_id, when, "s3", "eu-central-1");
    store.close().await.unwrap();
    assert!(matches!(
        store.get_account(&acct.id).await,
        Err(StoreError::Unavailable(_))
    ));
    store.close().await.unwrap();

    let store = open(&path).await;
    let (_, last) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    let last = last.unwrap();
    assert_eq!(
        (last.when, last.service.as_str(), last.region.as_str()),
        (when, "s3", "eu-central-1")
    );
    store.close().await.unwrap();
}

trait WithStatus {
    fn with_status(self, s: KeyStatus) -> Self;
}

impl WithStatus for keyward_store::AccessKey {
    fn with_status(mut self, s: KeyStatus) -> Self {
        self.status = s;
        self
    }
}

#[tokio::test]
async fn background_flush_writes_usage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = Store::open_sqlite_with(
        &path,
        MasterKey::from_bytes(MASTER),
        StoreOptions::default().usage_flush_interval(Some(Duration::from_millis(50))),
    )
    .await
    .unwrap();
    let acct = store.create_account("bg", None).await.unwrap();
    let (k, _) = store.create_access_key(&acct.id, None).await.unwrap();
    store.record_key_use(&k.key_id, SystemTime::now(), "sts", "us-east-1");
    // Another handle sees only what was written to the file.
    let other = open(&path).await;
    let mut seen = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if other
            .get_access_key_last_used(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .1
            .is_some()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "the background task never flushed");
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// The database, WAL and shared-memory files never hold a secret in clear.
#[tokio::test]
async fn no_clear_secret_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store.create_account("scan", None).await.unwrap();
    store.create_user(&acct.id, "u", "/", &[]).await.unwrap();
    let mut secrets = Vec::new();
    for owner in [None, None, Some("u"), Some("u")] {
        let (_, s) = store.create_access_key(&acct.id, owner).await.unwrap();
        secrets.push(s.expose().to_owned());
    }
    let given = "GivenSecretGivenSecretGivenSecret0123456";
    let other = store.create_account("scan2", None).await.unwrap();
    let id = keyward_ids::new_access_key_id(keyward_ids::KeyKind::LongTerm, &other.id);
    store
        .create_access_key_with(&other.id, None, &id, given)
        .await
        .unwrap();
    secrets.push(given.to_owned());

    let scan = |when: &str| {
        let mut scanned = 0;
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("keyward.db{suffix}"));
            let Ok(bytes) = fs::read(&p) else { continue };
            scanned += bytes.len();
            for s in &secrets {
                let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
                assert!(!found, "secret in clear in {} ({when})", p.display());
            }
        }
        assert!(scanned > 0);
    };
    // While open (the rows sit in the WAL) and after close (checkpointed into the database).
    scan("open");
    store.close().await.unwrap();
    scan("closed");
    // The secrets are still there, sealed.
    let store = open(&path).await;
    let (_, s) = store.get_access_key(&id).await.unwrap().unwrap();
    assert_eq!(s.expose(), given);
    store.close().await.unwrap();
}

#[tokio::test]
async fn another_master_key_cannot_open_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store.create_account("mk", None).await.unwrap();
    let (k, _) = store.create_access_key(&acct.id, None).await.unwrap();
    store.close().await.unwrap();
    let wrong = open_with(&path, MasterKey::from_bytes([0x11; 32])).await;
    match wrong.get_access_key(&k.key_id).await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains(&k.key_id), "{m}"),
        other => panic!("{other:?}"),
    }
    // Metadata stays readable.
    assert!(wrong
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .is_some());
    wrong.close().await.unwrap();
}

#[tokio::test]
async fn a_sealed_secret_moved_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store.create_account("swap", None).await.unwrap();
    let (a, _) = store.create_access_key(&acct.id, None).await.unwrap();
    let (b, _) = store.create_access_key(&acct.id, None).await.unwrap();
    store.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE access_keys SET sealed_secret =
               (SELECT sealed_secret FROM access_keys WHERE key_id = ?1) WHERE key_id = ?2",
            [&a.key_id, &b.key_id],
        )
        .unwrap();
    }
    let store = open(&path).await;
    assert!(store.get_access_key(&a.key_id).await.unwrap().is_some());
    assert!(matches!(
        store.get_access_key(&b.key_id).await,
        Err(StoreError::Corrupt(_))
    ));
    store.close().await.unwrap();
}

#[tokio::test]
async fn migrations_are_recorded_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    open(&path).await.close().await.unwrap();
    // Reopening applies nothing twice.
    open(&path).await.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, [1, 2, 3]);
        conn.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES (999, 0)",
            [],
        )
        .unwrap();
    }
    let err = Store::open_sqlite_with(
        &path,
        MasterKey::from_bytes(MASTER),
        StoreOptions::default().usage_flush_interval(None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IncompatibleSchema {
                found: 999,
                supported: 3
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn open_with_master_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let master = MasterKey::load_or_create(&key_path).unwrap();
    let store = open_with(&dir.path().join("keyward.db"), master).await;
    let acct = store.create_account("file", None).await.unwrap();
    let (k, s) = store.create_access_key(&acct.id, None).await.unwrap();
    store.close().await.unwrap();
    let store = open_with(
        &dir.path().join("keyward.db"),
        MasterKey::load(&key_path).unwrap(),
    )
    .await;
    assert_eq!(
        store
            .get_access_key(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .1
            .expose(),
        s.expose()
    );
    store.close().await.unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::load_or_create(&key_path).unwrap_err();
    assert!(
        matches!(err, StoreError::InsecureKeyFile { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0644"), "{err}");
}

#[test]
fn store_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
}

const CHILD_DB: &str = "KEYWARD_STORE_TEST_CHILD_DB";
const CHILD_ACCOUNT: &str = "KEYWARD_STORE_TEST_CHILD_ACCOUNT";

/// Not a test on its own: the writer process of `acknowledged_writes_survive_kill_9`. It creates
/// users and keys and deactivates every other key, printing each write once the store acknowledged
/// it, until it is killed.
#[test]
fn child_writer() {
    let (Ok(db), Ok(account)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ACCOUNT)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = open(Path::new(&db)).await;
        for i in 0.. {
            let user = format!("user{i}");
            store.create_user(&account, &user, "/", &[]).await.unwrap();
            let (k, _) = store
                .create_access_key(&account, Some(&user))
                .await
                .unwrap();
            println!("ACK {} Active", k.key_id);
            if i % 2 == 1 {
                store
                    .update_access_key_status(&account, Some(&user), &k.key_id, KeyStatus::Inactive)
                    .await
                    .unwrap();
                println!("ACK {} Inactive", k.key_id);
            }
        }
    });
}

/// Writes acknowledged by one process survive its `kill -9`, and another process sees them.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store.create_account("crash", None).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &path)
        .env(CHILD_ACCOUNT, &acct.id)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = std::collections::HashMap::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 12 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, status) = rest.split_once(' ').unwrap();
            acked.insert(key.to_owned(), KeyStatus::parse(status).unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    for (key_id, status) in &acked {
        let (k, _) = store
            .get_access_key(key_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key_id} lost"));
        // The writer may have deactivated a key after the last line we read: Inactive is at
        // least as new as an acknowledged Active, never the reverse.
        if *status == KeyStatus::Inactive {
            assert_eq!(k.status, KeyStatus::Inactive, "{key_id}");
        }
    }
    store.close().await.unwrap();
    // And after a fresh open, as a restarted server would.
    let store = open(&path).await;
    for key_id in acked.keys() {
        assert!(
            store.get_access_key(key_id).await.unwrap().is_some(),
            "{key_id} lost"
        );
    }
    store.close().await.unwrap();
}

const RACER_DB: &str = "KEYWARD_STORE_TEST_RACER_DB";
const RACER_ACCOUNT: &str = "KEYWARD_STORE_TEST_RACER_ACCOUNT";

/// Not a test on its own: one of the racing processes of `two_processes_never_exceed_limits`.
#[test]
fn child_racer() {
    let (Ok(db), Ok(account)) = (std::env::var(RACER_DB), std::env::var(RACER_ACCOUNT)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = open(Path::new(&db)).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, account) = (store.clone(), account.clone());
            tasks.push(tokio::spawn(async move {
                let user = (i % 2 == 0).then_some("racer");
                // The same new name, spelled with a different case by each task.
                let name: String = "newbie"
                    .chars()
                    .enumerate()
                    .map(|(j, c)| {
                        if (i >> (j % 3)) & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                let key = store.create_access_key(&account, user).await;
                let user = store.create_user(&account, &name, "/x/", &[]).await;
                (key.map(|_| ()), user.map(|_| ()))
            }));
        }
        let (mut keys, mut users) = (0, 0);
        for t in tasks {
            let (k, u) = t.await.unwrap();
            match k {
                Ok(()) => keys += 1,
                Err(StoreError::LimitExceeded(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
            match u {
                Ok(()) => users += 1,
                Err(StoreError::EntityAlreadyExists(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        println!("RESULT {keys} {users}");
        store.close().await.unwrap();
    });
}

/// Two processes racing on one file never get past the key quota or the name uniqueness.
#[tokio::test]
async fn two_processes_never_exceed_limits() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = open(&path).await;
    let acct = store.create_account("race", None).await.unwrap();
    // Key creates for "racer" and for the root race for two slots each; user creates race for
    // one name spelled in different cases.
    store
        .create_user(&acct.id, "racer", "/", &[])
        .await
        .unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "child_racer", "--nocapture", "--test-threads=1"])
                .env(RACER_DB, &path)
                .env(RACER_ACCOUNT, &acct.id)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut keys, mut users) = (0, 0);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text
            .split_once("RESULT ")
            .and_then(|(_, rest)| rest.lines().next())
            .unwrap_or_else(|| panic!("no RESULT line in {text:?}"));
        let mut parts = line.split(' ').map(|n| n.parse::<usize>().unwrap());
        keys += parts.next().unwrap();
        users += parts.next().unwrap();
    }
    assert_eq!(
        keys, 4,
        "two keys for the user and two for the root, in total"
    );
    assert_eq!(users, 1, "one user named newbie, whatever the case");
    assert_eq!(
        store
            .list_access_keys(&acct.id, Some("racer"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.list_access_keys(&acct.id, None).await.unwrap().len(),
        2
    );
    store.close().await.unwrap();
}

/// Starting a flush task replaces the running one (the server starts its own after open).
#[tokio::test]
async fn a_new_flush_task_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = Store::open_sqlite_with(
        &path,
        MasterKey::from_bytes(MASTER),
        StoreOptions::default().usage_flush_interval(Some(Duration::from_millis(30))),
    )
    .await
    .unwrap();
    let first = store.spawn_background_flush(Duration::from_millis(30));
    let second = store.spawn_background_flush(Duration::from_millis(30));
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .unwrap()
        .unwrap();
    assert!(!second.is_finished());
    let acct = store.create_account("gen", None).await.unwrap();
    let (k, _) = store.create_access_key(&acct.id, None).await.unwrap();
    store.record_key_use(&k.key_id, SystemTime::now(), "iam", "us-east-1");
    let other = open(&path).await;
    let mut seen = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if other
            .get_access_key_last_used(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .1
            .is_some()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "the newest flush task never flushed");
    store.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    other.close().await.unwrap();
}

#[tokio::test]
async fn open_by_url_and_no_change_feed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("by-url.db").display());
    let store = Store::open(&url, MasterKey::from_bytes(MASTER))
        .await
        .unwrap();
    store.create_account("by-url", None).await.unwrap();
    // SQLite has no change notifications: callers compare change_stamp.
    assert!(store.subscribe_changes().is_none());
    store.close().await.unwrap();
    let again = Store::open(&url, MasterKey::from_bytes(MASTER))
        .await
        .unwrap();
    assert!(again.get_account_by_name("by-url").await.unwrap().is_some());
    again.close().await.unwrap();
    assert!(matches!(
        Store::open("sqlite:", MasterKey::from_bytes(MASTER)).await,
        Err(StoreError::InvalidInput(_))
    ));
}

/// A database written by schema 2 (one row per audit event) is migrated: every event is kept, with
/// its JSON exactly as written, and found by the same filters.
#[tokio::test]
async fn schema_2_audit_events_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("../src/migrations/0001_initial.sql"))
            .unwrap();
        c.execute_batch(include_str!("../src/migrations/0002_audit_events.sql"))
            .unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1, 0), (2, 0);
             INSERT INTO accounts VALUES ('123456789012', 'old', 0);",
        )
        .unwrap();
        for i in 0..5000i64 {
            c.execute(
                "INSERT INTO audit_events (account_id, time_ms, event_id, event_name,
                     event_source, access_key_id, user_name, read_only, body)
                 VALUES ('123456789012', ?1, ?2, 'ListUsers', 'iam.amazonaws.com',
                     'AKIAOLD', ?3, 1, ?4)",
                rusqlite::params![
                    1_800_000_000_000 + i,
                    format!("old-{i}"),
                    (i % 2 == 0).then_some("alice"),
                    format!("{{\"eventID\":\"old-{i}\"}}")
                ],
            )
            .unwrap();
        }
    }
    let store = open(&path).await;
    let q = |filter, max| keyward_store::EventQuery {
        account_id: "123456789012".into(),
        filter,
        start: None,
        end: None,
        max_results: max,
        next_token: None,
    };
    let page = store.lookup_events(&q(None, 3)).await.unwrap();
    let ids: Vec<_> = page.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["old-4999", "old-4998", "old-4997"]);
    assert_eq!(
        page.events[0].stored_json.as_deref(),
        Some("{\"eventID\":\"old-4999\"}")
    );
    let mut n = 0;
    let mut query = q(
        Some(keyward_store::EventFilter::Username("alice".into())),
        50,
    );
    loop {
        let page = store.lookup_events(&query).await.unwrap();
        n += page.events.len();
        match page.next_token {
            Some(t) => query.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(n, 2500);
    store.close().await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let old: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
}
