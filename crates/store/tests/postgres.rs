//! The PostgreSQL engine on a real server: the shared suite, plus what only several nodes on one
//! server can show (races across pools, migrations raced by starting nodes, change notifications,
//! an outage and the recovery after it).
//!
//! The server comes from `KEYWARD_TEST_DATABASE_URL` (an admin URL: each test creates its own
//! database). `scripts/with-postgres` starts a throwaway one and also exports
//! `KEYWARD_TEST_PG_CTL`, `KEYWARD_TEST_PGDATA` and `KEYWARD_TEST_PG_LOG` for the outage test.
//! Without the URL the tests are skipped with a loud message, and fail when `CI` is set.

mod suite;

use std::collections::HashSet;
use std::future::Future;
use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_store::{
    mask_database_url, Change, KeyStatus, MasterKey, Store, StoreError, StoreOptions,
    POSTGRES_CALL_TIMEOUT,
};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

const MASTER: [u8; 32] = [0x5a; 32];

/// Tests share one server; the outage test stops it, so it runs alone (write lock) while the
/// others hold a read lock.
static SERVER: RwLock<()> = RwLock::new(());

fn run<F: Future<Output = ()>>(exclusive: bool, test: F) {
    run_on(2, exclusive, test)
}

/// [`run`] on a runtime of `workers` worker threads.
fn run_on<F: Future<Output = ()>>(workers: usize, exclusive: bool, test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    if exclusive {
        let _g = SERVER.write().unwrap_or_else(|p| p.into_inner());
        rt.block_on(test);
    } else {
        let _g = SERVER.read().unwrap_or_else(|p| p.into_inner());
        rt.block_on(test);
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The admin URL, or `None` (skip) outside CI; panics in CI.
fn admin_url() -> Option<String> {
    match env("KEYWARD_TEST_DATABASE_URL") {
        Some(url) => Some(url),
        None if env("CI").is_some() => panic!(
            "KEYWARD_TEST_DATABASE_URL is not set and CI is: run the tests under \
             scripts/with-postgres so the PostgreSQL engine is tested"
        ),
        None => {
            // Written past the test harness's capture so that it shows without --nocapture.
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "\n*** SKIPPED: the PostgreSQL tests need KEYWARD_TEST_DATABASE_URL; run \
                     `scripts/with-postgres cargo test -p keyward-store` ***\n"
                );
            });
            None
        }
    }
}

/// `url` with another database name.
fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let (server, _) = head.rsplit_once('/').expect("URL with a database");
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A new empty database on the test server; its URL.
async fn fresh_database(admin_url: &str) -> String {
    let db = format!("kw_{}", keyward_ids::new_account_id());
    admin(admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    with_database(admin_url, &db)
}

async fn open(url: &str) -> Store {
    Store::open_postgres_with(
        url,
        MasterKey::from_bytes(MASTER),
        StoreOptions::default().usage_flush_interval(None),
    )
    .await
    .unwrap()
}

/// A node on a fresh database holding the account `name` and its users `users`: (URL, node,
/// account id); `None` (skip) where [`admin_url`] is.
async fn account_with_users(name: &str, users: &[&str]) -> Option<(String, Store, String)> {
    let url = fresh_database(&admin_url()?).await;
    let store = open(&url).await;
    let acct = store.create_account(name, None).await.unwrap().id;
    for u in users {
        store.create_user(&acct, u, "/", &[]).await.unwrap();
    }
    Some((url, store, acct))
}

#[test]
fn postgres_suite() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let store = open(&fresh_database(&admin).await).await;
        suite::test_suite(&store).await;
        store.close().await.unwrap();
    });
}

#[test]
fn postgres_two_nodes() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let (a, b) = (open(&url).await, open(&url).await);
        suite::two_handles(&a, &b).await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn open_dispatches_on_the_url_scheme() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let pg = Store::open(&url, MasterKey::from_bytes(MASTER))
            .await
            .unwrap();
        pg.create_account("via-url", None).await.unwrap();
        assert!(pg.subscribe_changes().is_some());
        pg.close().await.unwrap();
        let postgresql = url.replacen("postgres://", "postgresql://", 1);
        let pg2 = Store::open(&postgresql, MasterKey::from_bytes(MASTER))
            .await
            .unwrap();
        assert!(pg2.get_account_by_name("via-url").await.unwrap().is_some());
        pg2.close().await.unwrap();
    });
}

/// Many clients on three nodes: never more than two keys per owner, exactly one user per name
/// (ignoring case), exactly one winner when two renames race to one name.
#[test]
fn racing_creates_across_three_nodes() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let nodes = [open(&url).await, open(&url).await, open(&url).await];
        let acct = nodes[0].create_account("race", None).await.unwrap().id;
        for round in 0..3 {
            let user = format!("racer{round}");
            nodes[1].create_user(&acct, &user, "/", &[]).await.unwrap();
            let mut tasks = Vec::new();
            for i in 0..24 {
                let s = nodes[i % 3].clone();
                let (acct, user) = (acct.clone(), user.clone());
                tasks.push(tokio::spawn(async move {
                    s.create_access_key(&acct, Some(&user)).await.map(|_| ())
                }));
            }
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) => ok += 1,
                    Err(StoreError::LimitExceeded(m)) => {
                        assert_eq!(m, "Cannot exceed quota for AccessKeysPerUser: 2")
                    }
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
            assert_eq!(ok, 2, "round {round}");
            assert_eq!(
                nodes[2]
                    .list_access_keys(&acct, Some(&user))
                    .await
                    .unwrap()
                    .len(),
                2
            );

            let mut tasks = Vec::new();
            for i in 0..24 {
                let s = nodes[i % 3].clone();
                let acct = acct.clone();
                let name = if i % 2 == 0 {
                    format!("Same{round}")
                } else {
                    format!("sAME{round}")
                };
                tasks.push(tokio::spawn(async move {
                    s.create_user(&acct, &name, "/", &[]).await
                }));
            }
            let mut ids = HashSet::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(u) => {
                        ids.insert(u.user_id);
                    }
                    Err(StoreError::EntityAlreadyExists(_)) => {}
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
            assert_eq!(ids.len(), 1, "round {round}");
        }

        // Two renames to one new name: one wins.
        nodes[0]
            .create_user(&acct, "ren-a", "/", &[])
            .await
            .unwrap();
        nodes[0]
            .create_user(&acct, "ren-b", "/", &[])
            .await
            .unwrap();
        let (x, y) = (nodes[1].clone(), nodes[2].clone());
        let (acct1, acct2) = (acct.clone(), acct.clone());
        let r1 =
            tokio::spawn(async move { x.update_user(&acct1, "ren-a", Some("target"), None).await });
        let r2 =
            tokio::spawn(async move { y.update_user(&acct2, "ren-b", Some("TARGET"), None).await });
        let results = [r1.await.unwrap(), r2.await.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(StoreError::EntityAlreadyExists(_)))));
        for n in &nodes {
            n.close().await.unwrap();
        }
    });
}

/// A database written by schema 2 (one row per audit event) is migrated: every event is kept, with
/// its JSON exactly as written.
#[test]
fn change_stamp_counts_every_concurrent_commit() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let nodes = [open(&url).await, open(&url).await];
        let acct = nodes[0].create_account("stamps", None).await.unwrap().id;
        let before = nodes[1].change_stamp().await.unwrap();
        // Writers on many connections of two nodes move different rows of the stamp; its sum
        // still counts each committed change once.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = nodes[i % 2].clone();
            let acct = acct.clone();
            tasks.push(tokio::spawn(async move {
                s.create_user(&acct, &format!("u{i}"), "/", &[])
                    .await
                    .map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let after = nodes[0].change_stamp().await.unwrap();
        assert_eq!(after - before, 40);
        // A failed write moves nothing.
        let dup = nodes[0].create_user(&acct, "U0", "/", &[]).await;
        assert!(
            matches!(dup, Err(StoreError::EntityAlreadyExists(_))),
            "{dup:?}"
        );
        assert_eq!(nodes[1].change_stamp().await.unwrap(), after);
        for n in &nodes {
            n.close().await.unwrap();
        }
    });
}

#[test]
fn schema_2_audit_events_are_kept() {
    run(false, async {
        let Some(admin_url_) = admin_url() else {
            return;
        };
        let url = fresh_database(&admin_url_).await;
        let client = admin(&url).await;
        client
            .batch_execute(include_str!("../src/migrations/postgres/0001_initial.sql"))
            .await
            .unwrap();
        client
            .batch_execute(include_str!(
                "../src/migrations/postgres/0002_audit_events.sql"
            ))
            .await
            .unwrap();
        client
            .batch_execute(
                "CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL);
                 INSERT INTO schema_version VALUES (1, 0), (2, 0);
                 INSERT INTO accounts VALUES ('123456789012', 'old', 0);
                 INSERT INTO audit_events (account_id, time_ms, event_id, event_name, event_source,
                     access_key_id, user_name, read_only, body)
                 SELECT '123456789012', 1800000000000 + i, 'old-' || i, 'ListUsers',
                     'iam.amazonaws.com', 'AKIAOLD', CASE WHEN i % 2 = 0 THEN 'alice' END, true,
                     '{\"eventID\":\"old-' || i || '\"}'
                 FROM generate_series(0, 4999) AS i;",
            )
            .await
            .unwrap();
        let store = Store::open_postgres(&url, MasterKey::from_bytes(MASTER))
            .await
            .unwrap();
        let mut q = keyward_store::EventQuery {
            account_id: "123456789012".into(),
            filter: Some(keyward_store::EventFilter::Username("alice".into())),
            start: None,
            end: None,
            max_results: 50,
            next_token: None,
        };
        let first = store.lookup_events(&q).await.unwrap();
        assert_eq!(first.events[0].event_id, "old-4998");
        assert_eq!(
            first.events[0].stored_json.as_deref(),
            Some("{\"eventID\":\"old-4998\"}")
        );
        let mut n = first.events.len();
        q.next_token = first.next_token;
        while q.next_token.is_some() {
            let page = store.lookup_events(&q).await.unwrap();
            n += page.events.len();
            q.next_token = page.next_token;
        }
        assert_eq!(n, 2500);
        store.close().await.unwrap();
        let left: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'audit_events'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    });
}

/// Nodes starting at the same moment on an empty database: one migrates, the others wait and
/// find the schema ready; each migration is recorded once.
#[test]
fn migrations_raced_by_starting_nodes() {
    run(false, async {
        let Some(admin_url_) = admin_url() else {
            return;
        };
        let url = fresh_database(&admin_url_).await;
        let mut opens = Vec::new();
        for _ in 0..6 {
            let url = url.clone();
            opens.push(tokio::spawn(async move {
                Store::open_postgres(&url, MasterKey::from_bytes(MASTER)).await
            }));
        }
        let mut stores = Vec::new();
        for o in opens {
            stores.push(o.await.unwrap().expect("every node opens"));
        }
        let client = admin(&url).await;
        let rows = client
            .query(
                "SELECT version, COUNT(*) FROM schema_version GROUP BY version",
                &[],
            )
            .await
            .unwrap();
        // Each migration applied once, by one node.
        let mut versions: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        versions.sort();
        assert_eq!(
            versions,
            [
                (1, 1),
                (2, 1),
                (3, 1),
                (4, 1),
                (5, 1),
                (6, 1),
                (7, 1),
                (8, 1)
            ]
        );
        // Schema 4: the audit batches are compressed with LZ4 (this server is built with it).
        let compression: Option<String> = client
            .query_one(
                "SELECT attcompression::text FROM pg_attribute \
                 WHERE attrelid = 'audit_batches'::regclass AND attname = 'data'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(compression.as_deref(), Some("l"));
        // Schema 5: the change stamp is spread over 16 rows, and is their sum.
        let rows: i64 = client
            .query_one("SELECT COUNT(*) FROM change_stamp", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 16);
        stores[0].create_account("migrated", None).await.unwrap();
        for s in &stores {
            assert!(s.get_account_by_name("migrated").await.unwrap().is_some());
            s.close().await.unwrap();
        }

        // A database from a newer keyward is refused.
        client
            .execute(
                "INSERT INTO schema_version (version, applied_ms) VALUES (999, 0)",
                &[],
            )
            .await
            .unwrap();
        match Store::open_postgres(&url, MasterKey::from_bytes(MASTER)).await {
            Err(StoreError::IncompatibleSchema { found: 999, .. }) => {}
            other => panic!("expected IncompatibleSchema, got {other:?}"),
        }
    });
}

async fn next_change(rx: &mut broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a change notification within 10 s")
        .expect("the change channel is open")
}

/// Changes written on one node reach another node's subscribers, once committed; failed writes
/// and new keys (no cache can hold them yet) announce nothing.
#[test]
fn change_notifications_reach_other_nodes() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let (a, b) = (open(&url).await, open(&url).await);
        let mut rx = b.subscribe_changes().expect("PostgreSQL announces changes");
        assert_eq!(next_change(&mut rx).await, Change::Resync);

        let acct = a.create_account("notify", None).await.unwrap().id;
        a.create_user(&acct, "Nora", "/", &[]).await.unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::User {
                account_id: acct.clone(),
                name: "Nora".into()
            }
        );
        let (k, _) = a.create_access_key(&acct, Some("nora")).await.unwrap();
        // The new key was not announced: the next announcement heard is this user's.
        a.create_user(&acct, "Olga", "/", &[]).await.unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::User {
                account_id: acct.clone(),
                name: "Olga".into()
            }
        );
        a.update_access_key_status(&acct, Some("nora"), &k.key_id, KeyStatus::Inactive)
            .await
            .unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::AccessKey(k.key_id.clone())
        );
        // A refused delete (the user has a key) announces nothing.
        assert!(matches!(
            a.delete_user(&acct, "nora").await,
            Err(StoreError::DeleteConflict(_))
        ));
        a.delete_access_key(&acct, Some("nora"), &k.key_id)
            .await
            .unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::AccessKey(k.key_id.clone())
        );
        a.update_user(&acct, "nora", Some("nina"), None)
            .await
            .unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::User {
                account_id: acct.clone(),
                name: "Nora".into()
            }
        );
        a.delete_user(&acct, "nina").await.unwrap();
        assert_eq!(
            next_change(&mut rx).await,
            Change::User {
                account_id: acct.clone(),
                name: "nina".into()
            }
        );
        // The writer's own subscribers hear it too.
        let mut own = a.subscribe_changes().unwrap();
        assert_eq!(next_change(&mut own).await, Change::Resync);
        let (root_key, _) = a.create_access_key(&acct, None).await.unwrap();
        a.update_access_key_status(&acct, None, &root_key.key_id, KeyStatus::Inactive)
            .await
            .unwrap();
        let deactivated = Change::AccessKey(root_key.key_id.clone());
        assert_eq!(next_change(&mut own).await, deactivated);
        assert_eq!(next_change(&mut rx).await, deactivated);
        a.close().await.unwrap();
        b.close().await.unwrap();
        assert!(b.subscribe_changes().is_none());
    });
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Last-used data coalesced on two nodes merges to the latest use whatever the flush order.
#[test]
fn last_used_merges_across_nodes() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let url = fresh_database(&admin).await;
        let (a, b) = (open(&url).await, open(&url).await);
        let acct = a.create_account("usage", None).await.unwrap().id;
        let (k1, _) = a.create_access_key(&acct, None).await.unwrap();
        let (k2, _) = a.create_access_key(&acct, None).await.unwrap();
        // k1: the later use is flushed first; k2: last.
        a.record_key_use(&k1.key_id, at(1_700_000_200), "sts", "eu-west-1");
        b.record_key_use(&k1.key_id, at(1_700_000_100), "s3", "us-east-1");
        a.record_key_use(&k2.key_id, at(1_700_000_100), "s3", "us-east-1");
        b.record_key_use(&k2.key_id, at(1_700_000_300), "iam", "ap-south-1");
        a.flush_key_usage().await.unwrap();
        b.flush_key_usage().await.unwrap();
        let (_, l1) = b
            .get_access_key_last_used(&k1.key_id)
            .await
            .unwrap()
            .unwrap();
        let l1 = l1.unwrap();
        assert_eq!((l1.when, l1.service.as_str()), (at(1_700_000_200), "sts"));
        let (_, l2) = a
            .get_access_key_last_used(&k2.key_id)
            .await
            .unwrap()
            .unwrap();
        let l2 = l2.unwrap();
        assert_eq!(
            (l2.when, l2.region.as_str()),
            (at(1_700_000_300), "ap-south-1")
        );
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn unreachable_server_or_refused_login_is_a_clear_error() {
    run(false, async {
        // Nothing listens on port 1: refused at once, and the password never shows.
        let url = "postgres://keyward:s3cr3t-pw@127.0.0.1:1/keyward";
        let t0 = Instant::now();
        let err = Store::open_postgres(url, MasterKey::from_bytes(MASTER))
            .await
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(10));
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            msg.contains("postgres://keyward:***@127.0.0.1:1/keyward"),
            "{msg}"
        );
        assert!(!msg.contains("s3cr3t-pw"), "{msg}");

        // Another scheme.
        let err = Store::open("mysql://root:hunter2@db/x", MasterKey::from_bytes(MASTER))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains("mysql://root:***@db/x"), "{err}");
        assert!(!err.to_string().contains("hunter2"));

        // An sslmode libpq does not know either is refused up front, not silently downgraded.
        let err = Store::open(
            "postgres://u:pw@localhost/db?sslmode=verify-fully",
            MasterKey::from_bytes(MASTER),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string().contains("sslmode \"verify-fully\""),
            "{err}"
        );
        assert!(
            err.to_string().contains("postgres://u:***@localhost/db"),
            "{err}"
        );

        // A login the server refuses (no such role; trust auth accepts any password).
        let Some(admin) = admin_url() else { return };
        let (head, tail) = admin.split_once("://").unwrap();
        let (_, host) = tail.split_once('@').unwrap();
        let bad = format!("{head}://nosuchrole:pw-xyz@{host}");
        let err = Store::open_postgres(&bad, MasterKey::from_bytes(MASTER))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(msg.contains("nosuchrole:***@"), "{msg}");
        assert!(msg.contains("nosuchrole\""), "{msg}");
        assert!(!msg.contains("pw-xyz"), "{msg}");
    });
}

#[test]
fn database_urls_are_masked() {
    for (url, masked) in [
        ("postgres://u:p@ss@h:5432/db", "postgres://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgres://u:pw@%2Frun%2Fpostgresql/db?sslmode=disable",
            "postgres://u:***@%2Frun%2Fpostgresql/db?sslmode=disable",
        ),
        (
            "postgres:///db?host=/run/pg&password=pw&user=u",
            "postgres:///db?host=/run/pg&password=***&user=u",
        ),
        ("sqlite:/var/lib/keyward.db", "sqlite:/var/lib/keyward.db"),
    ] {
        assert_eq!(mask_database_url(url), masked);
    }
}

fn pg_ctl(args: &[&str]) {
    let ctl = env("KEYWARD_TEST_PG_CTL").unwrap();
    let out = Command::new(&ctl).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{ctl} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server stops: calls fail `Unavailable` within a bound, never hang; it comes back: the same
/// handle works again by itself, the listener resyncs, and everything acknowledged is there.
#[test]
fn outage_is_unavailable_then_recovers_without_loss() {
    run(true, async {
        let Some(admin) = admin_url() else { return };
        let (Some(_), Some(pgdata), Some(pglog)) = (
            env("KEYWARD_TEST_PG_CTL"),
            env("KEYWARD_TEST_PGDATA"),
            env("KEYWARD_TEST_PG_LOG"),
        ) else {
            assert!(
                env("CI").is_none(),
                "CI needs KEYWARD_TEST_PG_CTL, KEYWARD_TEST_PGDATA and KEYWARD_TEST_PG_LOG"
            );
            eprintln!("*** SKIPPED: the outage test needs KEYWARD_TEST_PG_CTL/PGDATA/PG_LOG ***");
            return;
        };
        let url = fresh_database(&admin).await;
        let store = open(&url).await;
        let mut rx = store.subscribe_changes().unwrap();
        assert_eq!(next_change(&mut rx).await, Change::Resync);

        let acct = store.create_account("outage", None).await.unwrap().id;
        let mut acknowledged = Vec::new();
        for i in 0..5 {
            let name = format!("before{i}");
            store.create_user(&acct, &name, "/", &[]).await.unwrap();
            acknowledged.push(name);
        }
        let (key, secret) = store.create_access_key(&acct, None).await.unwrap();
        store.record_key_use(&key.key_id, at(1_700_000_500), "sts", "eu-west-1");

        pg_ctl(&["-D", &pgdata, "-m", "fast", "-w", "stop"]);
        let bound = POSTGRES_CALL_TIMEOUT + Duration::from_secs(2);
        for attempt in 0..3 {
            let t0 = Instant::now();
            let r = store.create_user(&acct, "during", "/", &[]).await;
            assert!(
                matches!(r, Err(StoreError::Unavailable(_))),
                "attempt {attempt}: {r:?}"
            );
            let t1 = Instant::now();
            let g = store.get_access_key(&key.key_id).await;
            assert!(matches!(g, Err(StoreError::Unavailable(_))), "{g:?}");
            assert!(t1.duration_since(t0) < bound && t1.elapsed() < bound);
        }
        // The pending use stays pending through a failed flush.
        assert!(store.flush_key_usage().await.is_err());

        pg_ctl(&["-D", &pgdata, "-l", &pglog, "-w", "start"]);
        let t0 = Instant::now();
        loop {
            match store.create_user(&acct, "after", "/", &[]).await {
                Ok(_) => break,
                Err(StoreError::Unavailable(m)) if t0.elapsed() < Duration::from_secs(30) => {
                    eprintln!("not yet back: {m}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no recovery: {e:?}"),
            }
        }
        acknowledged.push("after".into());
        for name in &acknowledged {
            assert!(
                store.get_user(&acct, name).await.unwrap().is_some(),
                "{name} lost"
            );
        }
        assert!(store.get_user(&acct, "during").await.unwrap().is_none());
        let (_, s) = store.get_access_key(&key.key_id).await.unwrap().unwrap();
        assert_eq!(s.expose(), secret.expose());
        store.flush_key_usage().await.unwrap();
        let other = open(&url).await;
        let (_, last) = other
            .get_access_key_last_used(&key.key_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.unwrap().when, at(1_700_000_500));

        // The listener came back by itself and says that it may have missed changes.
        loop {
            match next_change(&mut rx).await {
                Change::Resync => break,
                // What was announced before the outage, and "after" if heard before the resync.
                Change::User { .. } | Change::AccessKey(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        other
            .update_access_key_status(&acct, None, &key.key_id, KeyStatus::Inactive)
            .await
            .unwrap();
        loop {
            match next_change(&mut rx).await {
                Change::AccessKey(id) => {
                    assert_eq!(id, key.key_id);
                    break;
                }
                Change::User { .. } | Change::Resync => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        store.close().await.unwrap();
        other.close().await.unwrap();
    });
}

/// A server that accepts connections but never answers: opening fails `Unavailable` within the
/// connect bound instead of hanging.
#[test]
fn a_silent_server_is_unavailable_not_a_hang() {
    run(false, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock); // never read, never answered
            }
        });
        let url = format!("postgres://keyward:pw@127.0.0.1:{port}/keyward");
        let t0 = Instant::now();
        let err = Store::open_postgres(&url, MasterKey::from_bytes(MASTER))
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            took < keyward_store::POSTGRES_CONNECT_TIMEOUT + Duration::from_secs(3),
            "took {took:?}"
        );
        assert!(!err.to_string().contains(":pw@"), "{err}");
        hold.abort();
    });
}

/// A unix-socket host, as a `host=` parameter and as a percent-encoded URL host.
#[test]
fn unix_socket_urls() {
    run(false, async {
        let Some(admin) = admin_url() else { return };
        let (Some(dir), Some(port)) = (
            env("KEYWARD_TEST_PG_SOCKET_DIR"),
            env("KEYWARD_TEST_PG_PORT"),
        ) else {
            assert!(
                env("CI").is_none(),
                "CI needs KEYWARD_TEST_PG_SOCKET_DIR/PORT"
            );
            return;
        };
        let url = fresh_database(&admin).await;
        let db = url.rsplit_once('/').unwrap().1;
        let encoded = dir.replace('/', "%2F");
        for socket_url in [
            format!("postgresql:///{db}?host={dir}&port={port}&user=postgres&sslmode=disable"),
            format!("postgres://postgres@{encoded}:{port}/{db}"),
        ] {
            let store = Store::open(&socket_url, MasterKey::from_bytes(MASTER))
                .await
                .unwrap_or_else(|e| panic!("{socket_url}: {e}"));
            store
                .create_account(&format!("sock-{}", socket_url.len()), None)
                .await
                .unwrap();
            store.close().await.unwrap();
        }
    });
}

/// Holds the row of user `gate` locked from another connection, with a key creation for that user
/// stalled behind it, until [`Gate::open`]: the node's key-write queue waits on that write, so the
/// writes sent meanwhile are committed together, as one batch, once the gate opens.
struct Gate {
    lock: tokio_postgres::Client,
    /// The stalled write: the id of the key it creates.
    stalled: tokio::task::JoinHandle<Result<String, StoreError>>,
}

impl Gate {
    async fn close(url: &str, store: &Store, acct: &str) -> Gate {
        let lock = admin(url).await;
        lock.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM users WHERE account_id = '{acct}' AND name_lc = 'gate' FOR UPDATE"
        ))
        .await
        .unwrap();
        let stalled = {
            let (store, acct) = (store.clone(), acct.to_owned());
            tokio::spawn(async move {
                let made = store.create_access_key(&acct, Some("gate")).await;
                made.map(|(k, _)| k.key_id)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        Gate { lock, stalled }
    }

    /// Lets the writes sent since [`Gate::close`] queue up, then opens: returns the id of the key
    /// the stalled write created.
    async fn open(self) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !self.stalled.is_finished(),
            "the gate holds the first write"
        );
        self.lock.batch_execute("COMMIT").await.unwrap();
        self.stalled.await.unwrap().unwrap()
    }
}

/// Key writes queued behind a stalled one are committed as one batch: each is answered with its
/// own outcome (the two-keys quota counted within the batch, unknown users and keys refused by
/// themselves), the others commit, and a deleted key is announced.
#[test]
fn batched_key_writes_keep_their_own_outcomes() {
    run(false, async {
        let Some(admin_url_) = admin_url() else {
            return;
        };
        let url = fresh_database(&admin_url_).await;
        let (a, b) = (open(&url).await, open(&url).await);
        let mut rx = b.subscribe_changes().expect("PostgreSQL announces changes");
        assert_eq!(next_change(&mut rx).await, Change::Resync);
        let acct = a.create_account("batch", None).await.unwrap().id;
        for u in ["gate", "quota", "owner"] {
            a.create_user(&acct, u, "/", &[]).await.unwrap();
        }
        let (old, _) = a.create_access_key(&acct, Some("quota")).await.unwrap();
        let (doomed, _) = a.create_access_key(&acct, Some("owner")).await.unwrap();

        let gate = Gate::close(&url, &a, &acct).await;
        let mut creates = Vec::new();
        for _ in 0..3 {
            let (a, acct) = (a.clone(), acct.clone());
            creates.push(tokio::spawn(async move {
                a.create_access_key(&acct, Some("QUOTA")).await
            }));
        }
        let mut root_creates = Vec::new();
        for _ in 0..3 {
            let (a, acct) = (a.clone(), acct.clone());
            root_creates.push(tokio::spawn(async move {
                a.create_access_key(&acct, None).await
            }));
        }
        let unknown_user = {
            let (a, acct) = (a.clone(), acct.clone());
            tokio::spawn(async move { a.create_access_key(&acct, Some("nobody")).await })
        };
        let unknown_key = {
            let (a, acct) = (a.clone(), acct.clone());
            tokio::spawn(async move {
                a.delete_access_key(&acct, Some("owner"), "AKIAZZZZZZZZZZZZZZZZ")
                    .await
            })
        };
        let delete = {
            let (a, acct, id) = (a.clone(), acct.clone(), doomed.key_id.clone());
            tokio::spawn(async move { a.delete_access_key(&acct, Some("owner"), &id).await })
        };
        gate.open().await;

        let (made, refused) = created(creates).await;
        assert_eq!((made.len(), refused), (1, 2));
        let mut expected = vec![old.key_id.clone(), made[0].clone()];
        expected.sort();
        assert_eq!(key_ids(&a, &acct, Some("quota")).await, expected);
        // The root's keys: the quota counted within the batch as well.
        let (root_made, refused) = created(root_creates).await;
        assert_eq!((root_made.len(), refused), (2, 1));
        assert_eq!(key_ids(&a, &acct, None).await, root_made);
        match unknown_user.await.unwrap() {
            Err(StoreError::NoSuchEntity(m)) => {
                assert_eq!(m, "The user with name nobody cannot be found.")
            }
            other => panic!("unexpected: {other:?}"),
        }
        assert!(
            matches!(unknown_key.await.unwrap(), Err(StoreError::NoSuchEntity(_))),
            "a missing key is NoSuchEntity"
        );
        delete.await.unwrap().unwrap();
        assert!(a
            .list_access_keys(&acct, Some("owner"))
            .await
            .unwrap()
            .is_empty());
        // After the announcements of the three users created above, the deleted key's.
        loop {
            match next_change(&mut rx).await {
                Change::User { .. } => continue,
                c => {
                    assert_eq!(c, Change::AccessKey(doomed.key_id.clone()));
                    break;
                }
            }
        }
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

/// The ids of the keys that creations made, sorted, and how many the two-keys quota refused.
async fn created(
    creations: Vec<
        tokio::task::JoinHandle<
            Result<(keyward_store::AccessKey, keyward_store::Secret), StoreError>,
        >,
    >,
) -> (Vec<String>, usize) {
    let (mut made, mut refused) = (Vec::new(), 0);
    for t in creations {
        match t.await.unwrap() {
            Ok((k, _)) => made.push(k.key_id),
            Err(StoreError::LimitExceeded(m)) => {
                assert_eq!(m, "Cannot exceed quota for AccessKeysPerUser: 2");
                refused += 1;
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    made.sort();
    (made, refused)
}

/// The ids of the keys of `user` (`None`: the root), sorted.
async fn key_ids(store: &Store, acct: &str, user: Option<&str>) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_access_keys(acct, user)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    ids.sort();
    ids
}

/// When PostgreSQL refuses one write of a batch, the batch is rolled back and every write runs
/// again alone: the refused one fails, each of the others is committed exactly once.
#[test]
fn a_refused_write_does_not_fail_its_batch() {
    run(false, async {
        let Some((url, a, acct)) =
            account_with_users("refused", &["gate", "u0", "u1", "u2", "bad"]).await
        else {
            return;
        };
        // PostgreSQL itself refuses this key id (a trigger), as it would a broken constraint.
        const BAD: &str = "AKIABADBADBADBADBADB";
        admin(&url)
            .await
            .batch_execute(&format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF NEW.key_id = '{BAD}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                     RETURN NEW;
                 END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON access_keys
                     FOR EACH ROW EXECUTE FUNCTION refuse();"
            ))
            .await
            .unwrap();

        let gate = Gate::close(&url, &a, &acct).await;
        let mut good = Vec::new();
        for u in ["u0", "u1"] {
            let (a, acct) = (a.clone(), acct.clone());
            good.push(tokio::spawn(async move {
                a.create_access_key(&acct, Some(u)).await.map(|(k, _)| k)
            }));
        }
        let bad = {
            let (a, acct) = (a.clone(), acct.clone());
            tokio::spawn(async move {
                a.create_access_key_with(
                    &acct,
                    Some("bad"),
                    BAD,
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                )
                .await
            })
        };
        {
            let (a, acct) = (a.clone(), acct.clone());
            good.push(tokio::spawn(async move {
                a.create_access_key(&acct, Some("u2")).await.map(|(k, _)| k)
            }));
        }
        gate.open().await;

        match bad.await.unwrap() {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("refused by the test"), "{m}"),
            other => panic!("unexpected: {other:?}"),
        }
        for (t, u) in good.into_iter().zip(["u0", "u1", "u2"]) {
            let k = t.await.unwrap().unwrap();
            let listed = a.list_access_keys(&acct, Some(u)).await.unwrap();
            assert_eq!(listed.len(), 1, "{u}: created exactly once");
            assert_eq!(listed[0].key_id, k.key_id);
        }
        assert!(a
            .list_access_keys(&acct, Some("bad"))
            .await
            .unwrap()
            .is_empty());
        a.close().await.unwrap();
    });
}

/// Writes whose callers become ready together (as the requests answered by one batch do) go in
/// one batch: the batcher, woken by the first, lets the others queue theirs before it takes the
/// batch. One worker thread, as when keyward is pinned to one CPU, where the task woken last runs
/// next. A batch moves the change stamp once, a lone write once per write: without the turns,
/// each round of 8 creations then 8 deletions took 4 transactions (the first of each alone).
/// With them it takes 2, at times 3 (the runtime also wakes a yielding task when it polls for
/// I/O, and the batcher may then find nothing new yet).
#[test]
fn writes_queued_together_share_a_batch() {
    // Spawned, so that the test's own wake-ups also come from the worker, as a server's do.
    run_on(1, false, async {
        tokio::spawn(writes_queued_together()).await.unwrap();
    });
}

async fn writes_queued_together() {
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
    let Some((_, a, acct)) = account_with_users("together", &users).await else {
        return;
    };
    // The batcher starts on the first write.
    let (k, _) = a.create_access_key(&acct, Some("u0")).await.unwrap();
    a.delete_access_key(&acct, Some("u0"), &k.key_id)
        .await
        .unwrap();
    let rounds = 10;
    let before = a.change_stamp().await.unwrap();
    for _ in 0..rounds {
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(users.len() + 1));
        let writes: Vec<_> = users
            .iter()
            .map(|u| {
                let (a, acct, u, go) = (a.clone(), acct.clone(), *u, go.clone());
                tokio::spawn(async move {
                    go.wait().await;
                    let (k, _) = a.create_access_key(&acct, Some(&u)).await.unwrap();
                    a.delete_access_key(&acct, Some(&u), &k.key_id)
                        .await
                        .unwrap();
                })
            })
            .collect();
        go.wait().await;
        for w in writes {
            w.await.unwrap();
        }
    }
    let moved = a.change_stamp().await.unwrap() - before;
    assert!(
        (2 * rounds..=5 * rounds / 2).contains(&moved),
        "{moved} transactions for {rounds} rounds"
    );
    a.close().await.unwrap();
}

/// A batch moves the change stamp once, after its writes, and only when one of them changed
/// something.
#[test]
fn a_batch_moves_the_change_stamp_once_and_only_for_a_change() {
    run(false, async {
        let Some((url, a, acct)) = account_with_users("stamp", &["gate", "u0", "u1"]).await else {
            return;
        };
        // Each round: the stalled write (alone, one move), then a batch of three writes for
        // `nobody`, u0 and u1: all failing, then creations for u0 and u1, then deletions of
        // those keys (the write for `nobody` fails in every round).
        let mut made: Vec<Option<String>> = vec![None, None];
        for round in ["fail", "create", "delete"] {
            let before = a.change_stamp().await.unwrap();
            let gate = Gate::close(&url, &a, &acct).await;
            let mut writes = Vec::new();
            for (i, u) in ["nobody", "u0", "u1"].into_iter().enumerate() {
                let (a, acct) = (a.clone(), acct.clone());
                let key = i.checked_sub(1).and_then(|j| made[j].clone());
                writes.push(tokio::spawn(async move {
                    match (round, key) {
                        ("create", _) if u != "nobody" => a
                            .create_access_key(&acct, Some(u))
                            .await
                            .map(|(k, _)| Some(k.key_id)),
                        ("delete", Some(k)) => {
                            a.delete_access_key(&acct, Some(u), &k).await.map(|()| None)
                        }
                        // Fails by itself: no such user, or no such key.
                        _ => a
                            .delete_access_key(&acct, Some(u), "AKIAZZZZZZZZZZZZZZZZ")
                            .await
                            .map(|()| None),
                    }
                }));
            }
            let gated = gate.open().await;
            let mut ok = 0;
            for (i, w) in writes.into_iter().enumerate() {
                if let Ok(k) = w.await.unwrap() {
                    ok += 1;
                    if round == "create" {
                        made[i - 1] = k;
                    }
                }
            }
            let changed = round != "fail";
            assert_eq!(ok, if changed { 2 } else { 0 }, "round {round}");
            let moved = a.change_stamp().await.unwrap() - before;
            assert_eq!(moved, if changed { 2 } else { 1 }, "round {round}");
            a.delete_access_key(&acct, Some("gate"), &gated)
                .await
                .unwrap();
        }
        a.close().await.unwrap();
    });
}

/// A CreateAccessKey made inside `holding_commits` is answered before it commits: another
/// connection does not see the key until the request puts its audit event and commits, and then
/// sees both, stored by the one transaction. A hold dropped without a commit lets the write
/// commit (without waiting), and outside `holding_commits` writes commit before they return.
#[test]
fn held_writes_commit_with_their_event() {
    run_on(1, false, async {
        tokio::spawn(held_writes()).await.unwrap();
    });
}

async fn held_writes() {
    let Some((url, a, acct)) = account_with_users("held", &["u0", "u1"]).await else {
        return;
    };
    let other = open(&url).await;
    let event = |name: &str, id: &str| keyward_store::AuditRecord {
        account_id: Some(acct.clone()),
        time: std::time::SystemTime::now(),
        event_id: id.to_owned(),
        event_name: name.to_owned(),
        event_source: "iam.amazonaws.com".into(),
        region: "us-east-1".into(),
        identity_type: keyward_store::IdentityType::Root,
        principal_id: Some(acct.clone()),
        arn: None,
        access_key_id: None,
        user_name: None,
        session: false,
        read_only: false,
        source_ip: None,
        user_agent: None,
        error_code: None,
        error_message: None,
        request_parameters: None,
        response_elements: None,
        request_id: "r".into(),
        stored_json: None,
    };
    let events_of = |s: &Store| {
        let q = keyward_store::EventQuery {
            account_id: acct.clone(),
            filter: None,
            start: None,
            end: None,
            max_results: 50,
            next_token: None,
        };
        let s = s.clone();
        async move {
            s.lookup_events(&q)
                .await
                .unwrap()
                .events
                .into_iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>()
        }
    };
    let (made, holds) =
        keyward_store::holding_commits(a.create_access_key(&acct, Some("u1"))).await;
    let (key, _secret) = made.unwrap();
    assert_eq!(holds.len(), 1, "the write is held");
    // Not committed yet: another node does not find the key.
    assert!(other.get_access_key(&key.key_id).await.unwrap().is_none());
    let rec = event("CreateAccessKey", "held-1");
    assert!(holds[0].put(&rec.as_event()));
    for h in holds {
        h.commit().await.unwrap();
    }
    assert!(other.get_access_key(&key.key_id).await.unwrap().is_some());
    assert_eq!(events_of(&other).await, vec!["held-1".to_string()]);
    // A hold dropped without a commit: the write commits anyway, without an event.
    let (made, holds) =
        keyward_store::holding_commits(a.delete_access_key(&acct, Some("u1"), &key.key_id)).await;
    made.unwrap();
    assert_eq!(holds.len(), 1);
    drop(holds);
    for _ in 0..100 {
        if other.get_access_key(&key.key_id).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(other.get_access_key(&key.key_id).await.unwrap().is_none());
    assert_eq!(events_of(&other).await, vec!["held-1".to_string()]);
    // Outside holding_commits: committed when it returns.
    let (k2, _) = a.create_access_key(&acct, Some("u1")).await.unwrap();
    assert!(other.get_access_key(&k2.key_id).await.unwrap().is_some());
    // A failed write (no such user) is not held.
    let (made, holds) =
        keyward_store::holding_commits(a.create_access_key(&acct, Some("nobody"))).await;
    assert!(made.is_err() && holds.is_empty());
}
