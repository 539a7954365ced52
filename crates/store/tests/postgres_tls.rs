//! TLS to a real PostgreSQL server, every `sslmode`, and proof from the server's side
//! (`pg_stat_ssl`) that the store's connections really are encrypted.
//!
//! `scripts/with-postgres` starts the server with TLS on and exports `KEYWARD_TEST_PG_CA` (the
//! CA of its certificate, which names `localhost` only). Without `KEYWARD_TEST_DATABASE_URL` the
//! tests are skipped with a message, and fail when `CI` is set.

use std::future::Future;
use std::path::Path;
use std::process::Command;

use keyward_store::{MasterKey, Store, StoreError, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

const MASTER: [u8; 32] = [0x3c; 32];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The admin URL and the CA path, or `None` (skip) outside CI; panics in CI.
fn server() -> Option<(String, String)> {
    match (env("KEYWARD_TEST_DATABASE_URL"), env("KEYWARD_TEST_PG_CA")) {
        (Some(url), Some(ca)) => Some((url, ca)),
        _ if env("CI").is_some() => panic!(
            "KEYWARD_TEST_DATABASE_URL / KEYWARD_TEST_PG_CA are not set and CI is: run the tests \
             under scripts/with-postgres"
        ),
        _ => {
            eprintln!(
                "*** SKIPPED: the PostgreSQL TLS tests need scripts/with-postgres \
                 (KEYWARD_TEST_DATABASE_URL, KEYWARD_TEST_PG_CA) ***"
            );
            None
        }
    }
}

fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A new database on the test server; returns (its name, the server's port).
async fn fresh_database(admin_url: &str) -> (String, u16) {
    let db = format!("kwtls_{}", keyward_ids::new_account_id());
    admin(admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let port = admin_url
        .rsplit_once(':')
        .and_then(|(_, tail)| tail.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("admin URL with a port");
    (db, port)
}

async fn open(url: &str) -> Result<Store, StoreError> {
    Store::open_postgres_with(
        url,
        MasterKey::from_bytes(MASTER),
        StoreOptions::default().usage_flush_interval(None),
    )
    .await
}

/// Whether the server sees the connections of `application_name` as TLS (`None`: it sees none).
async fn server_sees_tls(admin_url: &str, app: &str) -> Option<bool> {
    let rows = admin(admin_url)
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    if rows.is_empty() {
        return None;
    }
    Some(rows.iter().all(|r| r.get::<_, bool>(0)))
}

/// Opens a store with `query` added to a URL of `host`, uses it, and returns what the server
/// saw of its connections.
async fn open_and_use(admin_url: &str, host: &str, query: &str) -> Option<bool> {
    let (db, port) = fresh_database(admin_url).await;
    let app = format!("kwtls{}", keyward_ids::new_account_id());
    let url = format!("postgres://postgres@{host}:{port}/{db}?application_name={app}&{query}");
    let store = open(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    store.create_account("tls", None).await.unwrap();
    assert_eq!(
        store
            .get_account_by_name("tls")
            .await
            .unwrap()
            .unwrap()
            .name,
        "tls"
    );
    let seen = server_sees_tls(admin_url, &app).await;
    store.close().await.unwrap();
    seen
}

#[test]
fn every_sslmode_against_a_tls_server() {
    run(async {
        let Some((admin_url, ca)) = server() else {
            return;
        };
        let ca = ca.replace('/', "%2F");
        // The certificate names `localhost` only: verify-ca does not care about the name, so
        // 127.0.0.1 is fine; verify-full is given host=localhost (hostaddr keeps it on IPv4).
        for (host, query, tls) in [
            ("127.0.0.1", "sslmode=require".to_owned(), true),
            ("127.0.0.1", String::new(), true), // prefer, libpq's default
            ("127.0.0.1", "sslmode=prefer".to_owned(), true),
            ("127.0.0.1", "sslmode=disable".to_owned(), false),
            (
                "127.0.0.1",
                format!("sslmode=verify-ca&sslrootcert={ca}"),
                true,
            ),
            (
                "localhost",
                format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
                true,
            ),
            // As libpq: require with a root file verifies the chain (and still connects here).
            (
                "127.0.0.1",
                format!("sslmode=require&sslrootcert={ca}"),
                true,
            ),
        ] {
            assert_eq!(
                open_and_use(&admin_url, host, &query).await,
                Some(tls),
                "{host} {query}"
            );
        }
    });
}

fn other_ca(dir: &Path) -> String {
    let pem = dir.join("other-ca.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not the server's CA",
            "-keyout",
        ])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl (scripts/with-postgres needs it too)");
    assert!(out.status.success(), "{out:?}");
    pem.to_string_lossy().replace('/', "%2F")
}

#[test]
fn verification_failures_are_clear_errors() {
    run(async {
        let Some((admin_url, ca)) = server() else {
            return;
        };
        let ca = ca.replace('/', "%2F");
        let (db, port) = fresh_database(&admin_url).await;
        let dir = tempfile::tempdir().unwrap();
        let wrong_ca = other_ca(dir.path());
        for (url, expect) in [
            // The certificate is for localhost, not 127.0.0.1.
            (
                format!("postgres://postgres:pw-1@127.0.0.1:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"),
                "not valid for name \"127.0.0.1\"",
            ),
            // Signed by another CA: verify-full and verify-ca both refuse it.
            (
                format!("postgres://postgres:pw-1@localhost:{port}/{db}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={wrong_ca}"),
                "UnknownIssuer",
            ),
            (
                format!("postgres://postgres:pw-1@127.0.0.1:{port}/{db}?sslmode=verify-ca&sslrootcert={wrong_ca}"),
                "UnknownIssuer",
            ),
        ] {
            let err = match open(&url).await {
                Ok(_) => panic!("{url} connected"),
                Err(e) => e,
            };
            let msg = err.to_string();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
            assert!(msg.contains("certificate") && msg.contains(expect), "{url}: {msg}");
            assert!(msg.contains("postgres:***@"), "{msg}");
            assert!(!msg.contains("pw-1"), "{msg}");
        }
        // A root file that cannot be read is refused before connecting.
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/{db}?sslmode=verify-ca&sslrootcert=%2Fnonexistent%2Fca.pem"
        );
        let Err(err) = open(&url).await else {
            panic!("{url} connected")
        };
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );
    });
}

/// A server that answers "no" to TLS, as PostgreSQL with `ssl = off` does.
#[test]
fn require_against_a_server_without_tls_fails() {
    run(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    // SSLRequest: length 8, code 80877103.
                    let mut req = [0u8; 8];
                    if sock.read_exact(&mut req).await.is_ok() {
                        assert_eq!(req, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
                        let _ = sock.write_all(b"N").await;
                    }
                    let mut rest = Vec::new();
                    let _ = sock.read_to_end(&mut rest).await;
                });
            }
        });
        for mode in ["require", "verify-full"] {
            let url = format!(
                "postgres://postgres@localhost:{port}/db?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert=system"
            );
            let err = match open(&url).await {
                Ok(_) => panic!("{url} connected"),
                Err(e) => e,
            };
            let msg = err.to_string();
            // Without system roots verify-full is refused before connecting: as clear.
            assert!(
                msg.contains("server does not support TLS")
                    || msg.contains("no system root certificates"),
                "{mode}: {msg}"
            );
        }
        fake.abort();
    });
}
