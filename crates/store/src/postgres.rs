//! The PostgreSQL engine.
//!
//! Several `keyward serve` nodes share one database, so everything that must be atomic is enforced
//! by PostgreSQL's own locks, never by the process: a write runs in one READ COMMITTED transaction
//! that first locks the row that owns the invariant (`SELECT ... FOR NO KEY UPDATE` on the account
//! row for user names, on the user row, or the account row for the root, for the two-keys quota and
//! tags), then checks, then writes; the next statement sees what the previous lock holder committed.
//! Unique constraints back every check (`users (account_id, name_lc)`, primary keys) and their
//! violations map to the same errors. A transaction is committed before the call returns.
//!
//! Bounded waits: connecting gives up after [`CONNECT_TIMEOUT`], every statement after
//! [`STATEMENT_TIMEOUT`] (server side, lock waits included), and every call after
//! [`CALL_TIMEOUT`] (client side, pool wait included), all as `StoreError::Unavailable`. The pool
//! drops closed connections and opens new ones on demand, so the engine recovers by itself when
//! the server is back.
//!
//! Migrations run at open under a transaction-level advisory lock: when several nodes start at
//! once one migrates and the others wait, then find nothing left to do.
//!
//! Changes that a verification cache cares about are announced with `NOTIFY keyward_changes` right
//! after their transaction commits, in a transaction of its own (so only committed changes are
//! announced); see [`crate::Change`] and [`PgBackend::announce`].

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    TimeoutType, Transaction,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Config, IsolationLevel, Row};

use crate::backend::{Backend, KeyRecord, NewKey, NewUser, Result};
use crate::events::{
    legacy_record, pack_batches, BatchQuery, BatchRow, LegacyEvent, PackedBatch,
    MAX_EVENTS_PER_BATCH,
};
use crate::model::{
    from_millis, to_millis, user_arn, AccessKey, Account, KeyStatus, LastUsed, Tag, User,
};
use crate::validate::fold;
use crate::{mask_database_url, Change, HeldCommit, KeyOwner, StoreError};

mod tls;

use tls::{MakeRustls, RootCerts, SslMode};

/// How long opening a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run on the server, waiting for a lock included.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take in all, waiting for a pooled connection included.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long announcing a committed change may take ([`PgBackend::announce`]) before it is given up
/// with a warning.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node may wait for another node's migration.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections per `Store` handle.
const POOL_SIZE: usize = 16;
/// The advisory lock that serializes migrations ("keyward" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;
/// The channel of change notifications.
pub(crate) const CHANNEL: &str = "keyward_changes";

/// Numbered migrations, applied in order, each in the same transaction as its `schema_version` row.
/// Never edit a published migration: append a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_initial.sql")),
    (2, include_str!("migrations/postgres/0002_audit_events.sql")),
    (
        3,
        include_str!("migrations/postgres/0003_audit_batches.sql"),
    ),
    (4, include_str!("migrations/postgres/0004_audit_lz4.sql")),
    (
        5,
        include_str!("migrations/postgres/0005_change_stamp_rows.sql"),
    ),
    (
        6,
        include_str!("migrations/postgres/0006_insert_access_key.sql"),
    ),
    (
        7,
        include_str!("migrations/postgres/0007_insert_access_key_unannounced.sql"),
    ),
    (
        8,
        include_str!("migrations/postgres/0008_access_keys_fillfactor.sql"),
    ),
];

/// The row of the change stamp a write moves: one of the 16 rows (schema 5) by connection, so
/// writers on different connections do not queue on one row lock until commit. The stamp is the
/// sum of the rows.
macro_rules! stamp_row {
    () => {
        "1 + pg_backend_pid() % 16"
    };
}

mod key_writes;

use key_writes::{KeyDelete, KeyWrite};

/// The PostgreSQL engine.
pub(crate) struct PgBackend {
    pool: Pool,
    config: Config,
    tls: MakeRustls,
    masked_url: String,
    closed: AtomicBool,
    changes: broadcast::Sender<Change>,
    listening: AtomicBool,
    stop: watch::Sender<bool>,
    /// The queue of access-key writes ([`key_writes`]), its batcher started on first use (on the
    /// runtime of that call).
    key_writes: std::sync::Mutex<Option<mpsc::Sender<KeyWrite>>>,
}

/// Errors inside a call: PostgreSQL's, or the store's own verdicts.
enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> StoreError {
        match f {
            Fail::Db(e) => db_error(&e),
            Fail::Store(e) => e,
        }
    }
}

type FResult<T> = std::result::Result<T, Fail>;
type BoxFut<'a, T> = Pin<Box<dyn Future<Output = FResult<T>> + Send + 'a>>;

/// An error with its sources, which `tokio_postgres::Error`'s `Display` leaves out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

fn db_error(e: &tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::QUERY_CANCELED => StoreError::Unavailable(format!(
            "PostgreSQL statement did not finish within {STATEMENT_TIMEOUT:?}: {}",
            chain(e)
        )),
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(chain(e))
        }
        _ => StoreError::Unavailable(format!("PostgreSQL: {}", chain(e))),
    }
}

/// The constraint a unique violation is about, if `e` is one.
fn unique_violation(e: &Fail) -> Option<&str> {
    match e {
        Fail::Db(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            e.as_db_error().and_then(|d| d.constraint())
        }
        _ => None,
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(TimeoutType::Wait) => StoreError::Unavailable(format!(
            "no free PostgreSQL connection within {CALL_TIMEOUT:?} (pool of {POOL_SIZE} busy)"
        )),
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no answer from the PostgreSQL server within {CONNECT_TIMEOUT:?} (down, or not \
             answering)"
        )),
        PoolError::Closed => StoreError::closed(),
        PoolError::Backend(e) => {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", chain(&e)))
        }
        other => StoreError::Unavailable(format!("PostgreSQL pool: {other}")),
    }
}

/// Parses a `postgres://` / `postgresql://` URL and adds keyward's defaults: connect timeout,
/// statement timeout, keepalives, application name. Returns it with the TLS connector of its
/// `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`, `verify-full`; see
/// [`tls`]) and `sslrootcert`.
pub(crate) fn parse_config(url: &str) -> Result<(Config, MakeRustls)> {
    let masked = mask_database_url(url);
    let (rest, ssl) = split_ssl_params(url);
    let mode = match ssl.mode.as_deref() {
        None => SslMode::Prefer,
        Some(v) => SslMode::parse(v).ok_or_else(|| {
            StoreError::InvalidInput(format!(
                "database URL {masked}: unknown sslmode {v:?}; use disable, prefer, require, \
                 verify-ca or verify-full"
            ))
        })?,
    };
    // As libpq: `require` with a root certificate file verifies the chain.
    let mode = match (mode, ssl.rootcert.as_deref()) {
        (SslMode::Require, Some(r)) if r != "system" => SslMode::VerifyCa,
        _ => mode,
    };
    let tls = MakeRustls::new(mode, &RootCerts::from_param(ssl.rootcert.as_deref()))
        .map_err(|e| StoreError::InvalidInput(format!("database URL {masked}: {e}")))?;
    let url = rest.as_str();
    let mut config = Config::from_str(url).map_err(|e| {
        StoreError::InvalidInput(format!("invalid database URL {masked}: {}", chain(&e)))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // Ours first so that options given in the URL win.
    let ours = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout=30000",
        STATEMENT_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("keyward");
    }
    config.keepalives_idle(Duration::from_secs(30));
    // PostgreSQL never speaks TLS on a unix socket; libpq then goes plain whatever the mode.
    let all_unix = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
    config.ssl_mode(if all_unix {
        tokio_postgres::config::SslMode::Disable
    } else {
        mode.negotiation()
    });
    Ok((config, tls))
}

/// The TLS parameters of a URL's query, taken out since tokio-postgres knows only some of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParams {
    mode: Option<String>,
    rootcert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` (percent-decoded; the last one wins, as in libpq) off the
/// URL's query and returns the URL without them.
fn split_ssl_params(url: &str) -> (String, SslParams) {
    let mut ssl = SslParams::default();
    let Some((head, query)) = url.split_once('?') else {
        return (url.to_owned(), ssl);
    };
    let mut kept = Vec::new();
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key {
            "sslmode" => ssl.mode = Some(percent_decode(value)),
            "sslrootcert" => ssl.rootcert = Some(percent_decode(value)),
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    (rest, ssl)
}

/// `%XX` decoding of a URL query value (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgBackend {
    /// Connects (failing within [`CONNECT_TIMEOUT`] with an error naming the masked URL) and
    /// brings the schema up to date.
    pub(crate) async fn open(url: &str) -> Result<PgBackend> {
        let (config, tls) = parse_config(url)?;
        let masked_url = mask_database_url(url);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL pool: {e}")))?;
        let backend = PgBackend {
            pool,
            config,
            tls,
            masked_url,
            closed: AtomicBool::new(false),
            changes: broadcast::channel(1024).0,
            listening: AtomicBool::new(false),
            stop: watch::channel(false).0,
            key_writes: std::sync::Mutex::new(None),
        };
        backend.migrate().await.map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("database {}: {m}", backend.masked_url))
            }
            other => other,
        })?;
        Ok(backend)
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let work = async {
            let tx = client.transaction().await?;
            // Waiting for another node's migration may take longer than a request.
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                MIGRATION_TIMEOUT.as_millis()
            ))
            .await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version    BIGINT PRIMARY KEY,
                    applied_ms BIGINT NOT NULL
                )",
            )
            .await?;
            let current: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
                .await?
                .try_get(0)?;
            let supported = MIGRATIONS.last().map_or(0, |m| m.0);
            if current > supported {
                return Err(StoreError::IncompatibleSchema {
                    found: current,
                    supported,
                }
                .into());
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                tx.batch_execute(sql).await?;
                if *version == 3 {
                    move_legacy_events(&tx).await?;
                }
                tx.execute(
                    "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)",
                    &[version, &to_millis(SystemTime::now())],
                )
                .await?;
            }
            tx.commit().await?;
            FResult::Ok(())
        };
        match tokio::time::timeout(MIGRATION_TIMEOUT + Duration::from_secs(5), work).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => {
                let _ = Object::take(client);
                Err(StoreError::Unavailable(format!(
                    "schema migration did not finish within {MIGRATION_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Runs `f` on a pooled connection within [`CALL_TIMEOUT`]. A connection whose call timed out
    /// is closed rather than returned to the pool.
    async fn with_client<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut Object) -> BoxFut<'c, T> + Send,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::closed());
        }
        let mut client = self.pool.get().await.map_err(pool_error)?;
        match tokio::time::timeout(CALL_TIMEOUT, f(&mut client)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => {
                let _ = Object::take(client);
                Err(StoreError::Unavailable(format!(
                    "no answer from PostgreSQL within {CALL_TIMEOUT:?}"
                )))
            }
        }
    }

    /// A write: one READ COMMITTED transaction, committed before returning.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> BoxFut<'t, T> + Send + 'static,
    {
        self.with_client(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let value = f(&tx).await?;
                tx.commit().await?;
                Ok(value)
            })
        })
        .await
    }

    /// A write that changes what verification caches hold: [`Self::write`], then, once committed,
    /// the change the closure returns is announced ([`Self::announce`]).
    async fn write_announced<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> BoxFut<'t, (T, Change)> + Send + 'static,
    {
        let (value, change) = self.write(f).await?;
        self.announce(&change).await;
        Ok(value)
    }

    /// Announces a committed change to the listeners of every node ([`announce`]).
    async fn announce(&self, change: &Change) {
        announce(&self.pool, std::slice::from_ref(change)).await;
    }

    /// Queues an access-key write for group commit ([`key_writes`]) and waits for its answer.
    /// Inside [`crate::holding_commits`] the write is held: answered before its batch commits,
    /// its [`crate::HeldCommit`] handed to the request.
    async fn key_write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>, Option<oneshot::Sender<HeldCommit>>) -> KeyWrite,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::closed());
        }
        // A write this request holds already commits first (one batch runs at a time).
        crate::held::release_held().await?;
        let (hold, held) = if crate::held::holding() {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let answered = self.queue_key_write(|reply| make(reply, hold)).await;
        // The batcher hands the hold over before it answers.
        if let Some(h) = held.and_then(|mut rx| rx.try_recv().ok()) {
            crate::held::hand_over(h);
        }
        answered
    }

    async fn queue_key_write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> KeyWrite,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let queue = {
            let mut q = self.key_writes.lock().unwrap_or_else(|e| e.into_inner());
            match &*q {
                Some(tx) if !tx.is_closed() => tx.clone(),
                // First use, or the runtime that ran the batcher is gone: start one here.
                _ => q.insert(key_writes::start(self.pool.clone())).clone(),
            }
        };
        if let Err(mpsc::error::SendError(w)) = queue.send(make(reply)).await {
            key_writes::run_alone(&self.pool, w).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the access-key writer stopped before answering".into(),
            ))
        })
    }

    /// A read of several statements: one read-only REPEATABLE READ transaction (one snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> BoxFut<'t, T> + Send + 'static,
    {
        self.with_client(move |c| {
            Box::pin(async move {
                let tx = c
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let value = f(&tx).await?;
                tx.commit().await?;
                Ok(value)
            })
        })
        .await
    }

    /// A read of one statement, outside any explicit transaction (one round trip once prepared).
    async fn single<T, F>(&self, sql: &'static str, params: Vec<String>, map: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Vec<Row>) -> FResult<T> + Send + 'static,
    {
        self.with_client(move |c| {
            Box::pin(async move {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let found = rows(&*c, sql, &refs).await?;
                map(found)
            })
        })
        .await
    }
}

/// Announces committed changes to the listeners of every node: `NOTIFY` in a transaction of its
/// own (one statement for all of them), sent after the changes' commit, on a pooled connection
/// within [`ANNOUNCE_TIMEOUT`].
///
/// Not in the writing transaction: PostgreSQL serializes the commits of all transactions that
/// sent a `NOTIFY` (one cluster-wide lock, held from before the commit's WAL flush to its end),
/// so every durable write would wait for the previous writer's fsync. A transaction that only
/// notifies writes no WAL to flush, so it holds that lock briefly.
///
/// The changes are committed when this runs, so a failure here is not the write's: it is
/// reported as a warning and the write stands (outside the write's own call timeout, so a
/// slow announcement cannot turn a committed write into an error). Other nodes then see the
/// change when their cache entries are next refreshed, which re-reads every entry once the
/// change stamp has moved, within the cache's lifetime; the same bound holds if this process
/// dies between the commit and here.
async fn announce(pool: &Pool, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let payloads: Vec<String> = changes.iter().map(Change::payload).collect();
    let work = async {
        let c = pool.get().await.map_err(pool_error)?;
        exec(
            &c,
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&CHANNEL, &payloads],
        )
        .await
        .map_err(StoreError::from)
    };
    let failure = match tokio::time::timeout(ANNOUNCE_TIMEOUT, work).await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer from PostgreSQL within {ANNOUNCE_TIMEOUT:?}"),
    };
    tracing::warn!(
        error = %failure,
        changes = %payloads.join(" "),
        "committed changes could not be announced to other nodes; their caches will see them at their next refresh"
    );
}

async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> FResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn opt_row<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> FResult<Option<Row>> {
    Ok(rows(c, sql, params).await?.into_iter().next())
}

async fn exec<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> FResult<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// Schema 3: packs the one-row-per-event audit trail of schema 2 into batches, then drops its table.
async fn move_legacy_events(tx: &Transaction<'_>) -> FResult<()> {
    let mut after = i64::MIN;
    loop {
        let found = rows(
            tx,
            "SELECT seq, account_id, time_ms, event_id, event_name, event_source,
                    access_key_id, user_name, read_only, body
             FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &(MAX_EVENTS_PER_BATCH as i64)],
        )
        .await?;
        if found.is_empty() {
            break;
        }
        let mut records = Vec::with_capacity(found.len());
        for r in &found {
            after = r.try_get(0)?;
            records.push(legacy_record(LegacyEvent {
                account_id: r.try_get(1)?,
                time_ms: r.try_get(2)?,
                event_id: r.try_get(3)?,
                event_name: r.try_get(4)?,
                event_source: r.try_get(5)?,
                access_key_id: r.try_get(6)?,
                user_name: r.try_get(7)?,
                read_only: r.try_get(8)?,
                body: r.try_get(9)?,
            }));
        }
        for b in pack_batches(&records) {
            insert_batch(tx, &b, false).await?;
        }
    }
    tx.batch_execute("DROP TABLE audit_events").await?;
    Ok(())
}

/// Stores a packed batch of audit events if its account exists ([`insert_batch`]).
const INSERT_BATCH_IF_ACCOUNT: &str =
    "INSERT INTO audit_batches (account_id, min_ms, max_ms, events, data)
     SELECT $1, $2, $3, $4, $5
     WHERE EXISTS (SELECT 1 FROM accounts WHERE account_id = $1)";

/// Inserts a packed batch; with `if_account`, only when its account exists.
async fn insert_batch<C: GenericClient>(c: &C, b: &PackedBatch, if_account: bool) -> FResult<u64> {
    let events = i32::try_from(b.events).unwrap_or(i32::MAX);
    let data: &[u8] = &b.data;
    let sql = if if_account {
        INSERT_BATCH_IF_ACCOUNT
    } else {
        "INSERT INTO audit_batches (account_id, min_ms, max_ms, events, data)
         VALUES ($1, $2, $3, $4, $5)"
    };
    exec(
        c,
        sql,
        &[&b.account_id, &b.min_ms, &b.max_ms, &events, &data],
    )
    .await
}

/// Every committed change but last-used updates moves the stamp.
async fn bump(tx: &Transaction<'_>) -> FResult<()> {
    exec(
        tx,
        concat!(
            "UPDATE change_stamp SET value = value + 1 WHERE id = ",
            stamp_row!()
        ),
        &[],
    )
    .await?;
    Ok(())
}

fn user_change(account_id: &str, name: &str) -> Change {
    Change::User {
        account_id: account_id.to_owned(),
        name: name.to_owned(),
    }
}

fn account_row(r: &Row) -> FResult<Account> {
    Ok(Account {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created: from_millis(r.try_get(2)?),
    })
}

fn user_row(r: &Row) -> FResult<User> {
    let account_id: String = r.try_get(0)?;
    let name: String = r.try_get(1)?;
    let path: String = r.try_get(3)?;
    Ok(User {
        arn: user_arn(&account_id, &path, &name),
        account_id,
        name,
        user_id: r.try_get(2)?,
        path,
        created: from_millis(r.try_get(4)?),
        tags: Vec::new(),
    })
}

async fn user_tags(tx: &Transaction<'_>, user_id: &str) -> FResult<Vec<Tag>> {
    rows(
        tx,
        "SELECT key, value FROM user_tags WHERE user_id = $1 ORDER BY key_lc",
        &[&user_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Tag {
            key: r.try_get(0)?,
            value: r.try_get(1)?,
        })
    })
    .collect()
}

/// The user (with tags), optionally locking its row (`lock` is a locking clause or `""`).
async fn find_user(
    tx: &Transaction<'_>,
    account_id: &str,
    name: &str,
    lock: &str,
) -> FResult<Option<User>> {
    let sql = format!(
        "SELECT account_id, name, user_id, path, created_ms FROM users
         WHERE account_id = $1 AND name_lc = $2 {lock}"
    );
    match opt_row(tx, &sql, &[&account_id, &fold(name)]).await? {
        Some(r) => {
            let mut u = user_row(&r)?;
            u.tags = user_tags(tx, &u.user_id).await?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

async fn require_user(
    tx: &Transaction<'_>,
    account_id: &str,
    name: &str,
    lock: &str,
) -> FResult<User> {
    find_user(tx, account_id, name, lock)
        .await?
        .ok_or_else(|| StoreError::no_such_user(name).into())
}

/// Locks the account row against other writers of the same account (not against foreign-key
/// checks, which take a weaker lock); `NoSuchEntity` if there is no such account.
async fn lock_account(tx: &Transaction<'_>, account_id: &str) -> FResult<()> {
    let found = opt_row(
        tx,
        "SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE",
        &[&account_id],
    )
    .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::no_such_account(account_id).into()),
    }
}

/// The owner's user id and stored name (`None` for the root), or `NoSuchEntity`; with `lock`, the
/// owner's row (the user's, or the account's for the root) is locked until commit.
async fn owner(
    tx: &Transaction<'_>,
    account_id: &str,
    user_name: Option<&str>,
    lock: bool,
) -> FResult<Option<(String, String)>> {
    match user_name {
        None => {
            let sql = if lock {
                "SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE"
            } else {
                "SELECT 1 FROM accounts WHERE account_id = $1"
            };
            match opt_row(tx, sql, &[&account_id]).await? {
                Some(_) => Ok(None),
                None => Err(StoreError::no_such_account(account_id).into()),
            }
        }
        Some(name) => {
            let sql = if lock {
                "SELECT user_id, name FROM users WHERE account_id = $1 AND name_lc = $2
                 FOR NO KEY UPDATE"
            } else {
                "SELECT user_id, name FROM users WHERE account_id = $1 AND name_lc = $2"
            };
            match opt_row(tx, sql, &[&account_id, &fold(name)]).await? {
                Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
                None => Err(StoreError::no_such_user(name).into()),
            }
        }
    }
}

const KEY_SELECT: &str = "SELECT k.key_id, k.account_id, u.name, k.status, k.created_ms, \
     k.sealed_secret, k.last_used_ms, k.last_used_service, k.last_used_region, u.user_id, u.path \
     FROM access_keys k LEFT JOIN users u ON u.user_id = k.user_id";

fn key_row(r: &Row) -> FResult<KeyRecord> {
    let status: String = r.try_get(3)?;
    let status = KeyStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown key status {status:?}")))?;
    let last_ms: Option<i64> = r.try_get(6)?;
    Ok(KeyRecord {
        key: AccessKey {
            key_id: r.try_get(0)?,
            account_id: r.try_get(1)?,
            user_name: r.try_get(2)?,
            status,
            created: from_millis(r.try_get(4)?),
        },
        sealed_secret: r.try_get(5)?,
        last_used: match last_ms {
            Some(ms) => Some(LastUsed {
                when: from_millis(ms),
                service: r.try_get::<_, Option<String>>(7)?.unwrap_or_default(),
                region: r.try_get::<_, Option<String>>(8)?.unwrap_or_default(),
            }),
            None => None,
        },
        owner: match r.try_get::<_, Option<String>>(9)? {
            Some(user_id) => Some(KeyOwner {
                user_id,
                path: r.try_get(10)?,
            }),
            None => None,
        },
    })
}

/// The owner condition on `user_id` with the owner's id as parameter `$n` (a NULL for the root,
/// still typed so that every parameter is used).
fn owner_filter(owner: &Option<(String, String)>, n: usize) -> String {
    match owner {
        Some(_) => format!("user_id = ${n}"),
        None => format!("user_id IS NULL AND ${n}::text IS NULL"),
    }
}

fn owned(s: &str) -> String {
    s.to_owned()
}

fn count(r: &Row) -> FResult<usize> {
    count_at(r, 0)
}

/// A count in column `i`.
fn count_at(r: &Row, i: usize) -> FResult<usize> {
    let n: i64 = r.try_get(i)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

#[async_trait]
impl Backend for PgBackend {
    async fn create_account(&self, id: &str, name: &str, created_ms: i64) -> Result<Account> {
        let (id, name) = (owned(id), owned(name));
        self.write(move |tx| {
            Box::pin(async move {
                let id_taken = || {
                    StoreError::EntityAlreadyExists(format!("Account with id {id} already exists."))
                };
                let name_taken = || {
                    StoreError::EntityAlreadyExists(format!(
                        "Account with name {name} already exists."
                    ))
                };
                if opt_row(tx, "SELECT 1 FROM accounts WHERE account_id = $1", &[&id])
                    .await?
                    .is_some()
                {
                    return Err(id_taken().into());
                }
                if opt_row(tx, "SELECT 1 FROM accounts WHERE name = $1", &[&name])
                    .await?
                    .is_some()
                {
                    return Err(name_taken().into());
                }
                let inserted = exec(
                    tx,
                    "INSERT INTO accounts (account_id, name, created_ms) VALUES ($1, $2, $3)",
                    &[&id, &name, &created_ms],
                )
                .await;
                if let Err(e) = inserted {
                    return Err(match unique_violation(&e) {
                        Some("accounts_pkey") => id_taken().into(),
                        Some(_) => name_taken().into(),
                        None => e,
                    });
                }
                bump(tx).await?;
                Ok(Account {
                    id: id.clone(),
                    name: name.clone(),
                    created: from_millis(created_ms),
                })
            })
        })
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        const SQL: &str = "SELECT account_id, name, created_ms FROM accounts WHERE account_id = $1";
        self.single(SQL, vec![owned(id)], |rows| {
            rows.first().map(account_row).transpose()
        })
        .await
    }

    async fn get_account_by_name(&self, name: &str) -> Result<Option<Account>> {
        const SQL: &str = "SELECT account_id, name, created_ms FROM accounts WHERE name = $1";
        self.single(SQL, vec![owned(name)], |rows| {
            rows.first().map(account_row).transpose()
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        const SQL: &str = "SELECT account_id, name, created_ms FROM accounts ORDER BY account_id";
        self.single(SQL, Vec::new(), |rows| {
            rows.iter().map(account_row).collect()
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write_announced(move |tx| {
            Box::pin(async move {
                // One user-name writer per account at a time.
                lock_account(tx, &user.account_id).await?;
                if find_user(tx, &user.account_id, &user.name, "").await?.is_some() {
                    return Err(StoreError::user_exists(&user.name).into());
                }
                let inserted = exec(
                    tx,
                    "INSERT INTO users (user_id, account_id, name, name_lc, path, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &user.user_id,
                        &user.account_id,
                        &user.name,
                        &fold(&user.name),
                        &user.path,
                        &user.created_ms,
                    ],
                )
                .await;
                if let Err(e) = inserted {
                    return Err(match unique_violation(&e) {
                        Some("users_account_name_lc") => StoreError::user_exists(&user.name).into(),
                        _ => e,
                    });
                }
                for t in &user.tags {
                    exec(
                        tx,
                        "INSERT INTO user_tags (user_id, key, key_lc, value) VALUES ($1, $2, $3, $4)",
                        &[&user.user_id, &t.key, &fold(&t.key), &t.value],
                    )
                    .await?;
                }
                bump(tx).await?;
                let change = user_change(&user.account_id, &user.name);
                Ok((require_user(tx, &user.account_id, &user.name, "").await?, change))
            })
        })
        .await
    }

    async fn get_user(&self, account_id: &str, name: &str) -> Result<Option<User>> {
        let (account_id, name) = (owned(account_id), owned(name));
        self.read(move |tx| Box::pin(async move { find_user(tx, &account_id, &name, "").await }))
            .await
    }

    async fn get_user_by_id(&self, account_id: &str, user_id: &str) -> Result<Option<User>> {
        let (account_id, user_id) = (owned(account_id), owned(user_id));
        self.read(move |tx| {
            Box::pin(async move {
                let found = opt_row(
                    tx,
                    "SELECT account_id, name, user_id, path, created_ms FROM users
                     WHERE account_id = $1 AND user_id = $2",
                    &[&account_id, &user_id],
                )
                .await?;
                match found {
                    Some(r) => {
                        let mut u = user_row(&r)?;
                        u.tags = user_tags(tx, &u.user_id).await?;
                        Ok(Some(u))
                    }
                    None => Ok(None),
                }
            })
        })
        .await
    }

    async fn list_users(
        &self,
        account_id: &str,
        path_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>> {
        let (account_id, prefix, after) = (owned(account_id), owned(path_prefix), after.map(owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            Box::pin(async move {
                let found = rows(
                    tx,
                    "SELECT account_id, name, user_id, path, created_ms FROM users
                     WHERE account_id = $1 AND left(path, length($2::text)) = $2::text
                       AND ($3::text IS NULL OR name_lc > $3::text)
                     ORDER BY name_lc LIMIT $4",
                    &[&account_id, &prefix, &after, &limit],
                )
                .await?;
                let mut users = found.iter().map(user_row).collect::<FResult<Vec<_>>>()?;
                if users.is_empty() {
                    return Ok(users);
                }
                let ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
                let tags = rows(
                    tx,
                    "SELECT user_id, key, value FROM user_tags WHERE user_id = ANY($1)
                     ORDER BY user_id, key_lc",
                    &[&ids],
                )
                .await?;
                let mut by_user: std::collections::HashMap<String, Vec<Tag>> =
                    std::collections::HashMap::new();
                for r in &tags {
                    by_user.entry(r.try_get(0)?).or_default().push(Tag {
                        key: r.try_get(1)?,
                        value: r.try_get(2)?,
                    });
                }
                for u in &mut users {
                    u.tags = by_user.remove(&u.user_id).unwrap_or_default();
                }
                Ok(users)
            })
        })
        .await
    }

    async fn update_user(
        &self,
        account_id: &str,
        name: &str,
        new_name: Option<&str>,
        new_path: Option<&str>,
    ) -> Result<User> {
        let (account_id, name) = (owned(account_id), owned(name));
        let (new_name, new_path) = (new_name.map(owned), new_path.map(owned));
        self.write_announced(move |tx| {
            Box::pin(async move {
                let renames = new_name.as_deref().is_some_and(|n| fold(n) != fold(&name));
                if renames {
                    // One user-name writer per account at a time (as create_user).
                    lock_account(tx, &account_id).await.map_err(|e| match e {
                        Fail::Store(StoreError::NoSuchEntity(_)) => {
                            StoreError::no_such_user(&name).into()
                        }
                        other => other,
                    })?;
                }
                let user = require_user(tx, &account_id, &name, "FOR NO KEY UPDATE").await?;
                let target_name = new_name.unwrap_or_else(|| user.name.clone());
                if fold(&target_name) != fold(&user.name)
                    && find_user(tx, &account_id, &target_name, "")
                        .await?
                        .is_some()
                {
                    return Err(StoreError::user_exists(&target_name).into());
                }
                let target_path = new_path.unwrap_or_else(|| user.path.clone());
                let updated = exec(
                    tx,
                    "UPDATE users SET name = $2, name_lc = $3, path = $4 WHERE user_id = $1",
                    &[
                        &user.user_id,
                        &target_name,
                        &fold(&target_name),
                        &target_path,
                    ],
                )
                .await;
                if let Err(e) = updated {
                    return Err(match unique_violation(&e) {
                        Some(_) => StoreError::user_exists(&target_name).into(),
                        None => e,
                    });
                }
                bump(tx).await?;
                let change = user_change(&account_id, &user.name);
                Ok((
                    require_user(tx, &account_id, &target_name, "").await?,
                    change,
                ))
            })
        })
        .await
    }

    async fn delete_user(&self, account_id: &str, name: &str) -> Result<()> {
        let (account_id, name) = (owned(account_id), owned(name));
        self.write_announced(move |tx| {
            Box::pin(async move {
                // FOR UPDATE: a key insert for this user waits, then finds no user.
                let user = require_user(tx, &account_id, &name, "FOR UPDATE").await?;
                let keys = opt_row(
                    tx,
                    "SELECT COUNT(*) FROM access_keys WHERE user_id = $1",
                    &[&user.user_id],
                )
                .await?;
                if keys.as_ref().map(count).transpose()?.unwrap_or(0) > 0 {
                    return Err(StoreError::user_has_keys().into());
                }
                exec(
                    tx,
                    "DELETE FROM user_tags WHERE user_id = $1",
                    &[&user.user_id],
                )
                .await?;
                exec(tx, "DELETE FROM users WHERE user_id = $1", &[&user.user_id]).await?;
                bump(tx).await?;
                Ok(((), user_change(&account_id, &user.name)))
            })
        })
        .await
    }

    async fn tag_user(
        &self,
        account_id: &str,
        name: &str,
        tags: &[Tag],
        max_tags: usize,
    ) -> Result<()> {
        let (account_id, name, tags) = (owned(account_id), owned(name), tags.to_vec());
        self.write_announced(move |tx| {
            Box::pin(async move {
                // Locked: two taggers cannot both pass the quota.
                let user = require_user(tx, &account_id, &name, "FOR NO KEY UPDATE").await?;
                for t in &tags {
                    exec(
                        tx,
                        "INSERT INTO user_tags (user_id, key, key_lc, value) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (user_id, key_lc)
                         DO UPDATE SET key = excluded.key, value = excluded.value",
                        &[&user.user_id, &t.key, &fold(&t.key), &t.value],
                    )
                    .await?;
                }
                let n = opt_row(
                    tx,
                    "SELECT COUNT(*) FROM user_tags WHERE user_id = $1",
                    &[&user.user_id],
                )
                .await?;
                if n.as_ref().map(count).transpose()?.unwrap_or(0) > max_tags {
                    return Err(StoreError::too_many_tags(max_tags).into());
                }
                bump(tx).await?;
                Ok(((), user_change(&account_id, &user.name)))
            })
        })
        .await
    }

    async fn untag_user(&self, account_id: &str, name: &str, keys: &[String]) -> Result<()> {
        let (account_id, name, keys) = (owned(account_id), owned(name), keys.to_vec());
        self.write_announced(move |tx| {
            Box::pin(async move {
                let user = require_user(tx, &account_id, &name, "FOR NO KEY UPDATE").await?;
                for k in &keys {
                    exec(
                        tx,
                        "DELETE FROM user_tags WHERE user_id = $1 AND key_lc = $2",
                        &[&user.user_id, &fold(k)],
                    )
                    .await?;
                }
                bump(tx).await?;
                Ok(((), user_change(&account_id, &user.name)))
            })
        })
        .await
    }

    async fn insert_access_key(&self, key: NewKey, max_keys: usize) -> Result<AccessKey> {
        // One statement (schema 7's function), group-committed with the other key writes.
        self.key_write(|reply, hold| KeyWrite::Insert {
            key,
            max_keys,
            reply,
            hold,
        })
        .await
    }

    async fn get_access_key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        // One statement: the key, its secret and its owner (name, id, path) together.
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("{KEY_SELECT} WHERE k.key_id = $1"));
        self.single(&SQL, vec![owned(key_id)], |rows| {
            rows.first().map(key_row).transpose()
        })
        .await
    }

    async fn get_access_keys(&self, key_ids: &[String]) -> Result<Vec<KeyRecord>> {
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("{KEY_SELECT} WHERE k.key_id = ANY($1)"));
        let key_ids = key_ids.to_vec();
        self.with_client(move |c| {
            Box::pin(async move {
                rows(&*c, &SQL, &[&key_ids])
                    .await?
                    .iter()
                    .map(key_row)
                    .collect()
            })
        })
        .await
    }

    async fn list_access_keys(
        &self,
        account_id: &str,
        user_name: Option<&str>,
    ) -> Result<Vec<AccessKey>> {
        let (account_id, user_name) = (owned(account_id), user_name.map(owned));
        self.read(move |tx| {
            Box::pin(async move {
                let owner = owner(tx, &account_id, user_name.as_deref(), false).await?;
                let owner_id = owner.as_ref().map(|o| o.0.clone());
                let sql = format!(
                    "{KEY_SELECT} WHERE k.account_id = $1 AND k.{}
                     ORDER BY k.created_ms, k.key_id",
                    owner_filter(&owner, 2)
                );
                rows(tx, &sql, &[&account_id, &owner_id])
                    .await?
                    .iter()
                    .map(|r| key_row(r).map(|rec| rec.key))
                    .collect()
            })
        })
        .await
    }

    async fn update_access_key_status(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
        status: KeyStatus,
    ) -> Result<()> {
        let (account_id, user_name, key_id) =
            (owned(account_id), user_name.map(owned), owned(key_id));
        self.write_announced(move |tx| {
            Box::pin(async move {
                let owner = owner(tx, &account_id, user_name.as_deref(), false).await?;
                let owner_id = owner.as_ref().map(|o| o.0.clone());
                let sql = format!(
                    "UPDATE access_keys SET status = $4
                     WHERE key_id = $2 AND account_id = $1 AND {}",
                    owner_filter(&owner, 3)
                );
                let n = exec(
                    tx,
                    &sql,
                    &[&account_id, &key_id, &owner_id, &status.as_str()],
                )
                .await?;
                if n == 0 {
                    return Err(StoreError::no_such_key(&key_id).into());
                }
                bump(tx).await?;
                Ok(((), Change::AccessKey(key_id.clone())))
            })
        })
        .await
    }

    async fn delete_access_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
    ) -> Result<()> {
        // One statement, group-committed with the other key writes, and announced once committed.
        let target = KeyDelete {
            account_id: owned(account_id),
            user_name: user_name.map(owned),
            key_id: owned(key_id),
        };
        self.key_write(|reply, hold| KeyWrite::Delete {
            target,
            reply,
            hold,
        })
        .await
    }

    async fn record_key_usage(&self, batch: Vec<(String, LastUsed)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ms: Vec<i64> = batch.iter().map(|(_, u)| to_millis(u.when)).collect();
        let (ids, used): (Vec<String>, Vec<LastUsed>) = batch.into_iter().unzip();
        let (services, regions): (Vec<String>, Vec<String>) =
            used.into_iter().map(|u| (u.service, u.region)).unzip();
        self.write(move |tx| {
            Box::pin(async move {
                // Two statements whatever the number of keys (it was one round trip per key).
                // The rows are locked in key order first, the same order on every node, so two
                // flushes that touch the same keys cannot deadlock.
                rows(
                    tx,
                    "SELECT 1 FROM access_keys WHERE key_id = ANY($1) ORDER BY key_id FOR UPDATE",
                    &[&ids],
                )
                .await?;
                // A conditional update: a later use stored by another node is kept.
                exec(
                    tx,
                    "UPDATE access_keys AS k
                     SET last_used_ms = u.ms, last_used_service = u.service,
                         last_used_region = u.region
                     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
                          AS u(key_id, ms, service, region)
                     WHERE k.key_id = u.key_id
                       AND (k.last_used_ms IS NULL OR k.last_used_ms < u.ms)",
                    &[&ids, &ms, &services, &regions],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn set_account_alias(&self, account_id: &str, alias: &str) -> Result<()> {
        let (account_id, alias) = (owned(account_id), owned(alias));
        self.write(move |tx| {
            Box::pin(async move {
                let taken = || {
                    StoreError::EntityAlreadyExists(format!(
                        "The account alias {alias} already exists."
                    ))
                };
                let holder = opt_row(
                    tx,
                    "SELECT account_id FROM account_aliases WHERE alias = $1",
                    &[&alias],
                )
                .await?;
                if let Some(r) = holder {
                    let h: String = r.try_get(0)?;
                    if h == account_id {
                        return Ok(());
                    }
                    return Err(taken().into());
                }
                lock_account(tx, &account_id).await?;
                // An account has at most one alias: a new one replaces the old (as AWS does).
                exec(
                    tx,
                    "DELETE FROM account_aliases WHERE account_id = $1",
                    &[&account_id],
                )
                .await?;
                let inserted = exec(
                    tx,
                    "INSERT INTO account_aliases (alias, account_id) VALUES ($1, $2)",
                    &[&alias, &account_id],
                )
                .await;
                if let Err(e) = inserted {
                    return Err(match unique_violation(&e) {
                        Some(_) => taken().into(),
                        None => e,
                    });
                }
                bump(tx).await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_account_aliases(&self, account_id: &str) -> Result<Vec<String>> {
        const SQL: &str = "SELECT alias FROM account_aliases WHERE account_id = $1 ORDER BY alias";
        self.single(SQL, vec![owned(account_id)], |rows| {
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
        .await
    }

    async fn delete_account_alias(&self, account_id: &str, alias: &str) -> Result<()> {
        let (account_id, alias) = (owned(account_id), owned(alias));
        self.write(move |tx| {
            Box::pin(async move {
                let n = exec(
                    tx,
                    "DELETE FROM account_aliases WHERE account_id = $1 AND alias = $2",
                    &[&account_id, &alias],
                )
                .await?;
                if n == 0 {
                    return Err(StoreError::NoSuchEntity(format!(
                        "The account alias {alias} cannot be found."
                    ))
                    .into());
                }
                bump(tx).await?;
                Ok(())
            })
        })
        .await
    }

    async fn change_stamp(&self) -> Result<u64> {
        const SQL: &str = "SELECT SUM(value)::bigint FROM change_stamp";
        self.single(SQL, Vec::new(), |rows| {
            let v: Option<i64> = match rows.first() {
                Some(r) => r.try_get(0)?,
                None => None,
            };
            let Some(v) = v else {
                return Err(StoreError::Corrupt("no change_stamp row".into()).into());
            };
            Ok(u64::try_from(v).unwrap_or(0))
        })
        .await
    }

    fn subscribe_changes(&self) -> Option<broadcast::Receiver<Change>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let rx = self.changes.subscribe();
        if !self.listening.swap(true, Ordering::AcqRel) {
            tokio::spawn(listen(
                self.config.clone(),
                self.tls.clone(),
                self.changes.clone(),
                self.stop.subscribe(),
            ));
        }
        Some(rx)
    }

    async fn append_event_batches(&self, batches: Vec<PackedBatch>, synced: bool) -> Result<()> {
        if synced && batches.len() == 1 {
            // The usual synced batch (one account's): one statement, committed on its own, one
            // round trip instead of three.
            return self
                .with_client(move |c| {
                    Box::pin(async move {
                        insert_batch(&*c, &batches[0], true).await?;
                        Ok(())
                    })
                })
                .await;
        }
        self.write(move |tx| {
            Box::pin(async move {
                if !synced {
                    // For this transaction only: its commit returns before the WAL is flushed.
                    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
                        .await?;
                }
                for b in &batches {
                    insert_batch(tx, b, true).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn event_batches(&self, q: BatchQuery) -> Result<Vec<BatchRow>> {
        self.with_client(move |c| {
            Box::pin(async move {
                let (after_ms, after_seq) = q.after.unwrap_or((i64::MAX, i64::MAX));
                let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
                let found = rows(
                    &*c,
                    "SELECT seq, max_ms, data FROM audit_batches
                     WHERE account_id = $1 AND max_ms >= $2 AND min_ms <= $3
                       AND (max_ms, seq) < ($4, $5)
                     ORDER BY max_ms DESC, seq DESC LIMIT $6",
                    &[
                        &q.account_id,
                        &q.start_ms,
                        &q.end_ms,
                        &after_ms,
                        &after_seq,
                        &limit,
                    ],
                )
                .await?;
                found
                    .iter()
                    .map(|r| {
                        Ok(BatchRow {
                            seq: r.try_get(0)?,
                            max_ms: r.try_get(1)?,
                            data: r.try_get(2)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn prune_events(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                let found = rows(
                    tx,
                    "WITH gone AS (
                         DELETE FROM audit_batches WHERE seq IN
                             (SELECT seq FROM audit_batches WHERE max_ms < $1
                              ORDER BY max_ms LIMIT $2)
                         RETURNING events)
                     SELECT COALESCE(SUM(events), 0)::int8 FROM gone",
                    &[&before_ms, &limit],
                )
                .await?;
                let n: i64 = match found.first() {
                    Some(r) => r.try_get(0)?,
                    None => 0,
                };
                Ok(n as u64)
            })
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
        self.pool.close();
        Ok(())
    }
}

/// The LISTEN connection: forwards notifications to `changes`, reconnecting (with backoff up to
/// 5 s) whenever the connection is lost, and sends [`Change::Resync`] each time it is listening
/// again, since notifications sent meanwhile are lost. Ends when `stop` turns true.
async fn listen(
    config: Config,
    tls: MakeRustls,
    changes: broadcast::Sender<Change>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::time::timeout(CALL_TIMEOUT, config.connect(tls.clone())).await;
        if let Ok(Ok((client, mut conn))) = connected {
            let forward = {
                let changes = changes.clone();
                tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                                let _ = changes.send(Change::from_payload(n.payload()));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                })
            };
            let listening = tokio::time::timeout(
                CALL_TIMEOUT,
                client.batch_execute(&format!("LISTEN {CHANNEL}")),
            )
            .await;
            if matches!(listening, Ok(Ok(()))) {
                backoff = Duration::from_millis(100);
                let _ = changes.send(Change::Resync);
                let mut forward = forward;
                tokio::select! {
                    _ = &mut forward => {}
                    _ = stop.changed() => {
                        forward.abort();
                        return;
                    }
                }
            } else {
                forward.abort();
            }
            drop(client);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn ssl_params_are_split_off_and_the_rest_is_kept() {
        let (rest, ssl) = split_ssl_params(
            "postgres://u:pw@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem&options=-c%20a%3D1",
        );
        assert_eq!(
            rest,
            "postgres://u:pw@h:5/db?application_name=x&options=-c%20a%3D1"
        );
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.rootcert.as_deref(), Some("/etc/ca b.pem"));
        let (rest, ssl) = split_ssl_params("postgres://u@h/db?sslmode=disable");
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(ssl.mode.as_deref(), Some("disable"));
        let (rest, ssl) = split_ssl_params("postgres://u@h/db");
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(ssl, SslParams::default());
        assert_eq!(percent_decode("a%2x%41%"), "a%2xA%");
    }

    #[test]
    fn modes_reach_tokio_postgres() {
        use tokio_postgres::config::SslMode as Pg;
        for (q, want) in [
            ("", Pg::Prefer),
            ("?sslmode=disable", Pg::Disable),
            ("?sslmode=prefer", Pg::Prefer),
            ("?sslmode=require", Pg::Require),
            ("?sslmode=verify-ca&sslrootcert=system", Pg::Require),
            ("?sslmode=verify-full", Pg::Require),
        ] {
            match parse_config(&format!("postgres://u@127.0.0.1/db{q}")) {
                Ok((config, _)) => assert_eq!(config.get_ssl_mode(), want, "{q}"),
                // A machine without system roots: verify-* is refused up front, clearly.
                Err(e) => assert!(e.to_string().contains("no system root"), "{q}: {e}"),
            }
        }
        // A unix socket never uses TLS (as libpq), whatever the mode.
        let (config, _) =
            parse_config("postgresql:///db?host=/run/postgresql&sslmode=require").unwrap();
        assert_eq!(config.get_ssl_mode(), Pg::Disable);
        let err = parse_config("postgres://u:hunter2@h/db?sslmode=verify-everything")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown sslmode \"verify-everything\""),
            "{err}"
        );
        assert!(err.contains("postgres://u:***@h/db"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
