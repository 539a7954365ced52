//! The embedded SQLite engine.
//!
//! One database file in WAL mode with `synchronous=FULL`: a committed transaction is on disk when the
//! call returns and survives `kill -9`. Reads run on tokio's blocking pool with a connection taken
//! from a small pool (opened on demand), so several tasks read at once. Writes go to one writer
//! thread per store ([`writer`]) that owns the write connection and commits the writes queued
//! meanwhile together (group commit, one savepoint per write, every caller answered after the
//! commit). Its transactions are `BEGIN IMMEDIATE`, which takes the database's write lock before
//! reading anything: a check followed by an insert (name free? fewer than two keys?) is atomic
//! across connections and processes. Waiting for another process's lock is bounded by a busy
//! timeout. Nothing is cached between calls, so rows written by another process are seen at once.

mod writer;

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use tokio::sync::oneshot;

use crate::backend::{Backend, KeyRecord, NewKey, NewUser, Result};
use crate::events::{
    legacy_record, pack_batches, BatchQuery, BatchRow, LegacyEvent, PackedBatch,
    MAX_EVENTS_PER_BATCH,
};
use crate::model::{
    from_millis, to_millis, user_arn, AccessKey, Account, KeyStatus, LastUsed, Tag, User,
};
use crate::validate::fold;
use crate::{KeyOwner, StoreError};

/// How long a call waits for another connection's write lock before failing `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);
/// Idle connections kept open for reuse.
const MAX_IDLE: usize = 4;

/// Numbered migrations, applied in order, each in the same transaction as its `schema_version` row.
/// Never edit a published migration: append a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_audit_events.sql")),
    (3, include_str!("migrations/0003_audit_batches.sql")),
];

/// The SQLite engine.
pub(crate) struct SqliteBackend {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// Read connections.
    idle: Mutex<Vec<Connection>>,
    /// The queue of the writer thread, which owns the write connection.
    writer: mpsc::Sender<writer::Msg>,
    closed: AtomicBool,
}

/// Errors inside a blocking closure: SQLite's, or the store's own verdicts.
enum Fail {
    Db(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

type FResult<T> = std::result::Result<T, Fail>;

fn db_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Unavailable(
            format!("the database stayed locked by another writer for {BUSY_TIMEOUT:?}: {e}"),
        ),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("database file: {e}"))
        }
        _ => StoreError::Unavailable(format!("database error: {e}")),
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> StoreError {
        match f {
            Fail::Db(e) => db_error(e),
            Fail::Store(e) => e,
        }
    }
}

impl SqliteBackend {
    /// Opens (creating with mode 0600 if needed) the database at `path` and brings its schema up
    /// to date; `write_cache_mib` bounds the write connection's page cache (`None`: SQLite's
    /// default).
    pub(crate) async fn open(path: &Path, write_cache_mib: Option<u32>) -> Result<SqliteBackend> {
        let path = path.to_path_buf();
        let shared = tokio::task::spawn_blocking(move || -> Result<Shared> {
            create_private_file(&path)?;
            let mut conn = open_connection(&path).map_err(StoreError::from)?;
            migrate(&mut conn)?;
            let write_conn = open_connection(&path).map_err(StoreError::from)?;
            if let Some(mib) = write_cache_mib {
                write_conn
                    .pragma_update(None, "cache_size", -i64::from(mib) * 1024)
                    .map_err(|e| StoreError::from(Fail::Db(e)))?;
            }
            let (queue, inbox) = mpsc::channel();
            std::thread::Builder::new()
                .name("keyward-sqlite-writer".into())
                .spawn(move || writer::run(write_conn, inbox))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the database writer: {e}"))
                })?;
            Ok(Shared {
                path,
                idle: Mutex::new(vec![conn]),
                writer: queue,
                closed: AtomicBool::new(false),
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the database failed: {e}")))??;
        Ok(SqliteBackend {
            shared: Arc::new(shared),
        })
    }

    /// Runs `f` in a read transaction (a consistent snapshot) on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> FResult<T> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> Result<T> {
            if shared.closed.load(Ordering::Acquire) {
                return Err(StoreError::closed());
            }
            let mut conn = shared.take()?;
            let result = (|| -> FResult<T> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                let value = f(&tx)?;
                tx.commit()?;
                Ok(value)
            })();
            shared.put(conn);
            result.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Queues `f` for the writer thread, which runs it inside a group commit (see [`writer`]), and
    /// answers once the transaction holding it is durable (or `f` failed and was undone).
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> FResult<T> + Send + 'static,
    {
        self.write_synced(f, true).await
    }

    /// [`SqliteBackend::write`]; with `synced` false, the commit need not reach the disk before the
    /// answer (the group commit holding it uses `synchronous=NORMAL`, unless another write in it
    /// needs the disk).
    async fn write_synced<T, F>(&self, f: F, synced: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> FResult<T> + Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::closed());
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(writer::Msg::Op(writer::op(f, reply, synced)))
            .map_err(|_| StoreError::closed())?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the database writer stopped before answering".into())
        })?
    }
}

impl Shared {
    fn take(&self) -> Result<Connection> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => open_connection(&self.path).map_err(StoreError::from),
        }
    }

    fn put(&self, conn: Connection) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Creates the database file with mode 0600 unless it exists, so SQLite (which gives its `-wal` and
/// `-shm` files the database's mode) never creates a world-readable file.
fn create_private_file(path: &Path) -> Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn open_connection(path: &Path) -> FResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot put {} in WAL mode (got {mode})",
            path.display()
        ))
        .into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Savepoint (statement) journals in memory: the writer runs every operation of a group commit
    // inside its own SAVEPOINT, and with journals on disk each page an operation touches was first
    // copied to a temporary file (a pwrite per page; a third of the server's CPU under a stream of
    // audit events). They only ever serve rollbacks within the open transaction.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let mut run = || -> FResult<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                applied_ms INTEGER NOT NULL
            )",
        )?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        let supported = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > supported {
            return Err(StoreError::IncompatibleSchema {
                found: current,
                supported,
            }
            .into());
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.execute_batch(sql)?;
            if *version == 3 {
                move_legacy_events(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
                params![version, to_millis(SystemTime::now())],
            )?;
        }
        tx.commit()?;
        Ok(())
    };
    run().map_err(StoreError::from)
}

/// Schema 3: packs the one-row-per-event audit trail of schema 2 into batches, then drops its table.
fn move_legacy_events(tx: &Transaction<'_>) -> FResult<()> {
    let mut after = i64::MIN;
    loop {
        let mut rows = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT seq, account_id, time_ms, event_id, event_name, event_source,
                        access_key_id, user_name, read_only, body
                 FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut q = stmt.query(params![after, MAX_EVENTS_PER_BATCH as i64])?;
            while let Some(r) = q.next()? {
                after = r.get(0)?;
                rows.push(legacy_record(LegacyEvent {
                    account_id: r.get(1)?,
                    time_ms: r.get(2)?,
                    event_id: r.get(3)?,
                    event_name: r.get(4)?,
                    event_source: r.get(5)?,
                    access_key_id: r.get(6)?,
                    user_name: r.get(7)?,
                    read_only: r.get(8)?,
                    body: r.get(9)?,
                }));
            }
        }
        if rows.is_empty() {
            break;
        }
        for b in pack_batches(&rows) {
            insert_batch(tx, &b)?;
        }
    }
    tx.execute_batch("DROP TABLE audit_events")?;
    Ok(())
}

fn insert_batch(tx: &Transaction<'_>, b: &PackedBatch) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO audit_batches (account_id, min_ms, max_ms, events, data)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        b.account_id,
        b.min_ms,
        b.max_ms,
        b.events,
        b.data.as_slice()
    ])
}

/// Statements through the connection's prepared-statement cache: the write path runs the same few
/// statements over and over, and parsing them each time was a visible share of its CPU.
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Transaction<'_> {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

fn bump(tx: &Transaction<'_>) -> FResult<()> {
    tx.exec("UPDATE change_stamp SET value = value + 1 WHERE id = 1", [])?;
    Ok(())
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        created: from_millis(r.get(2)?),
    })
}

const ACCOUNT_COLS: &str = "account_id, name, created_ms";

fn account_exists(tx: &Transaction<'_>, account_id: &str) -> FResult<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM accounts WHERE account_id = ?1",
            [account_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

const USER_COLS: &str = "account_id, name, user_id, path, created_ms";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let account_id: String = r.get(0)?;
    let name: String = r.get(1)?;
    let path: String = r.get(3)?;
    Ok(User {
        arn: user_arn(&account_id, &path, &name),
        account_id,
        name,
        user_id: r.get(2)?,
        path,
        created: from_millis(r.get(4)?),
        tags: Vec::new(),
    })
}

fn user_tags(tx: &Transaction<'_>, user_id: &str) -> FResult<Vec<Tag>> {
    let mut stmt =
        tx.prepare_cached("SELECT key, value FROM user_tags WHERE user_id = ?1 ORDER BY key_lc")?;
    let tags = stmt
        .query_map([user_id], |r| {
            Ok(Tag {
                key: r.get(0)?,
                value: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(tags)
}

fn find_user(tx: &Transaction<'_>, account_id: &str, name: &str) -> FResult<Option<User>> {
    let user = tx
        .query_row(
            &format!("SELECT {USER_COLS} FROM users WHERE account_id = ?1 AND name_lc = ?2"),
            params![account_id, fold(name)],
            user_row,
        )
        .optional()?;
    match user {
        Some(mut u) => {
            u.tags = user_tags(tx, &u.user_id)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

fn require_user(tx: &Transaction<'_>, account_id: &str, name: &str) -> FResult<User> {
    find_user(tx, account_id, name)?.ok_or_else(|| StoreError::no_such_user(name).into())
}

/// The owner's user id (`None` for the root), or `NoSuchEntity`.
fn owner_id(
    tx: &Transaction<'_>,
    account_id: &str,
    user_name: Option<&str>,
) -> FResult<Option<String>> {
    match user_name {
        None => {
            if account_exists(tx, account_id)? {
                Ok(None)
            } else {
                Err(StoreError::no_such_account(account_id).into())
            }
        }
        Some(name) => {
            let id: Option<String> = tx
                .query_row(
                    "SELECT user_id FROM users WHERE account_id = ?1 AND name_lc = ?2",
                    params![account_id, fold(name)],
                    |r| r.get(0),
                )
                .optional()?;
            id.map(Some)
                .ok_or_else(|| StoreError::no_such_user(name).into())
        }
    }
}

const KEY_COLS: &str = "k.key_id, k.account_id, u.name, k.status, k.created_ms, k.sealed_secret, \
                        k.last_used_ms, k.last_used_service, k.last_used_region, u.user_id, u.path";
const KEY_FROM: &str = "access_keys k LEFT JOIN users u ON u.user_id = k.user_id";
/// One key by id, with its owner (authentication's lookup).
static KEY_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.key_id = ?1"));

fn parse_status(s: &str) -> rusqlite::Result<KeyStatus> {
    KeyStatus::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown key status {s:?}").into(),
        )
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let status: String = r.get(3)?;
    let last_ms: Option<i64> = r.get(6)?;
    Ok(KeyRecord {
        key: AccessKey {
            key_id: r.get(0)?,
            account_id: r.get(1)?,
            user_name: r.get(2)?,
            status: parse_status(&status)?,
            created: from_millis(r.get(4)?),
        },
        sealed_secret: r.get(5)?,
        last_used: match last_ms {
            Some(ms) => Some(LastUsed {
                when: from_millis(ms),
                service: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                region: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            }),
            None => None,
        },
        owner: match r.get::<_, Option<String>>(9)? {
            Some(user_id) => Some(KeyOwner {
                user_id,
                path: r.get(10)?,
            }),
            None => None,
        },
    })
}

/// CreateUser inside a write transaction: the account exists, the name is free (ignoring case).
fn create_user_tx(tx: &Transaction<'_>, user: &NewUser) -> FResult<User> {
    if !account_exists(tx, &user.account_id)? {
        return Err(StoreError::no_such_account(&user.account_id).into());
    }
    if find_user(tx, &user.account_id, &user.name)?.is_some() {
        return Err(StoreError::user_exists(&user.name).into());
    }
    tx.exec(
        "INSERT INTO users (user_id, account_id, name, name_lc, path, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            user.user_id,
            user.account_id,
            user.name,
            fold(&user.name),
            user.path,
            user.created_ms
        ],
    )?;
    for t in &user.tags {
        tx.exec(
            "INSERT INTO user_tags (user_id, key, key_lc, value) VALUES (?1, ?2, ?3, ?4)",
            params![user.user_id, t.key, fold(&t.key), t.value],
        )?;
    }
    bump(tx)?;
    require_user(tx, &user.account_id, &user.name)
}

/// CreateAccessKey inside a write transaction: the owner exists, has fewer than `max_keys` keys,
/// and the id is free.
fn insert_key_tx(tx: &Transaction<'_>, key: NewKey, max_keys: usize) -> FResult<AccessKey> {
    let owner = owner_id(tx, &key.account_id, key.user_name.as_deref())?;
    let count: i64 = tx.row(
        "SELECT COUNT(*) FROM access_keys WHERE account_id = ?1 AND user_id IS ?2",
        params![key.account_id, owner],
        |r| r.get(0),
    )?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= max_keys {
        return Err(StoreError::too_many_keys(max_keys).into());
    }
    let exists = tx
        .query_row(
            "SELECT 1 FROM access_keys WHERE key_id = ?1",
            [&key.key_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Err(StoreError::EntityAlreadyExists(format!(
            "Access key with id {} already exists.",
            key.key_id
        ))
        .into());
    }
    tx.exec(
        "INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
         VALUES (?1, ?2, ?3, 'Active', ?4, ?5)",
        params![
            key.key_id,
            key.account_id,
            owner,
            key.sealed_secret,
            key.created_ms
        ],
    )?;
    bump(tx)?;
    // The user's name as stored (the caller may have used another case).
    let user_name: Option<String> = match &owner {
        Some(id) => Some(
            tx.row("SELECT name FROM users WHERE user_id = ?1", [id], |r| {
                r.get(0)
            })?,
        ),
        None => None,
    };
    Ok(AccessKey {
        key_id: key.key_id,
        account_id: key.account_id,
        user_name,
        status: KeyStatus::Active,
        created: from_millis(key.created_ms),
    })
}

fn owned(s: &str) -> String {
    s.to_owned()
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn create_account(&self, id: &str, name: &str, created_ms: i64) -> Result<Account> {
        let (id, name) = (owned(id), owned(name));
        self.write(move |tx| {
            if account_exists(tx, &id)? {
                return Err(StoreError::EntityAlreadyExists(format!(
                    "Account with id {id} already exists."
                ))
                .into());
            }
            let taken = tx
                .query_row(
                    "SELECT 1 FROM accounts WHERE name = ?1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                return Err(StoreError::EntityAlreadyExists(format!(
                    "Account with name {name} already exists."
                ))
                .into());
            }
            tx.exec(
                "INSERT INTO accounts (account_id, name, created_ms) VALUES (?1, ?2, ?3)",
                params![id, name, created_ms],
            )?;
            bump(tx)?;
            Ok(Account {
                id,
                name,
                created: from_millis(created_ms),
            })
        })
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        let id = owned(id);
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE account_id = ?1"),
                    [id],
                    account_row,
                )
                .optional()?)
        })
        .await
    }

    async fn get_account_by_name(&self, name: &str) -> Result<Option<Account>> {
        let name = owned(name);
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE name = ?1"),
                    [name],
                    account_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY account_id"
            ))?;
            let rows = stmt
                .query_map([], account_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |tx| create_user_tx(tx, &user)).await
    }

    async fn get_user(&self, account_id: &str, name: &str) -> Result<Option<User>> {
        let (account_id, name) = (owned(account_id), owned(name));
        self.read(move |tx| find_user(tx, &account_id, &name)).await
    }

    async fn get_user_by_id(&self, account_id: &str, user_id: &str) -> Result<Option<User>> {
        let (account_id, user_id) = (owned(account_id), owned(user_id));
        self.read(move |tx| {
            let user = tx
                .query_row(
                    &format!(
                        "SELECT {USER_COLS} FROM users WHERE account_id = ?1 AND user_id = ?2"
                    ),
                    params![account_id, user_id],
                    user_row,
                )
                .optional()?;
            match user {
                Some(mut u) => {
                    u.tags = user_tags(tx, &u.user_id)?;
                    Ok(Some(u))
                }
                None => Ok(None),
            }
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
            let mut stmt = tx.prepare(&format!(
                "SELECT {USER_COLS} FROM users
                 WHERE account_id = ?1 AND substr(path, 1, length(?2)) = ?2
                   AND (?3 IS NULL OR name_lc > ?3)
                 ORDER BY name_lc LIMIT ?4"
            ))?;
            let mut users = stmt
                .query_map(params![account_id, prefix, after, limit], user_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for u in &mut users {
                u.tags = user_tags(tx, &u.user_id)?;
            }
            Ok(users)
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
        self.write(move |tx| {
            let user = require_user(tx, &account_id, &name)?;
            let target_name = new_name.unwrap_or_else(|| user.name.clone());
            if fold(&target_name) != fold(&user.name)
                && find_user(tx, &account_id, &target_name)?.is_some()
            {
                return Err(StoreError::user_exists(&target_name).into());
            }
            let target_path = new_path.unwrap_or_else(|| user.path.clone());
            tx.exec(
                "UPDATE users SET name = ?2, name_lc = ?3, path = ?4 WHERE user_id = ?1",
                params![user.user_id, target_name, fold(&target_name), target_path],
            )?;
            bump(tx)?;
            require_user(tx, &account_id, &target_name)
        })
        .await
    }

    async fn delete_user(&self, account_id: &str, name: &str) -> Result<()> {
        let (account_id, name) = (owned(account_id), owned(name));
        self.write(move |tx| {
            let user = require_user(tx, &account_id, &name)?;
            let keys: i64 = tx.row(
                "SELECT COUNT(*) FROM access_keys WHERE user_id = ?1",
                [&user.user_id],
                |r| r.get(0),
            )?;
            if keys > 0 {
                return Err(StoreError::user_has_keys().into());
            }
            tx.exec("DELETE FROM user_tags WHERE user_id = ?1", [&user.user_id])?;
            tx.exec("DELETE FROM users WHERE user_id = ?1", [&user.user_id])?;
            bump(tx)?;
            Ok(())
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
        self.write(move |tx| {
            let user = require_user(tx, &account_id, &name)?;
            for t in &tags {
                tx.exec(
                    "INSERT INTO user_tags (user_id, key, key_lc, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user_id, key_lc) DO UPDATE SET key = excluded.key, value = excluded.value",
                    params![user.user_id, t.key, fold(&t.key), t.value],
                )?;
            }
            let count: i64 = tx.row(
                "SELECT COUNT(*) FROM user_tags WHERE user_id = ?1",
                [&user.user_id],
                |r| r.get(0),
            )?;
            if usize::try_from(count).unwrap_or(usize::MAX) > max_tags {
                return Err(StoreError::too_many_tags(max_tags).into());
            }
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn untag_user(&self, account_id: &str, name: &str, keys: &[String]) -> Result<()> {
        let (account_id, name, keys) = (owned(account_id), owned(name), keys.to_vec());
        self.write(move |tx| {
            let user = require_user(tx, &account_id, &name)?;
            for k in &keys {
                tx.exec(
                    "DELETE FROM user_tags WHERE user_id = ?1 AND key_lc = ?2",
                    params![user.user_id, fold(k)],
                )?;
            }
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn insert_access_key(&self, key: NewKey, max_keys: usize) -> Result<AccessKey> {
        self.write(move |tx| insert_key_tx(tx, key, max_keys)).await
    }

    async fn create_users_with_keys(
        &self,
        batch: Vec<(NewUser, Vec<NewKey>)>,
        max_keys: usize,
    ) -> Result<Vec<(User, AccessKey)>> {
        // One write operation (one savepoint in the writer's transaction): all or nothing.
        self.write(move |tx| {
            let mut made = Vec::with_capacity(batch.len());
            for (user, keys) in batch {
                let user = create_user_tx(tx, &user)?;
                let mut inserted = None;
                for key in keys {
                    // A taken id fails before anything is written: try the next candidate.
                    match insert_key_tx(tx, key, max_keys) {
                        Ok(k) => {
                            inserted = Some(k);
                            break;
                        }
                        Err(Fail::Store(StoreError::EntityAlreadyExists(_))) => {}
                        Err(e) => return Err(e),
                    }
                }
                let key = inserted.ok_or_else(|| {
                    StoreError::EntityAlreadyExists("every candidate access key id is taken".into())
                })?;
                made.push((user, key));
            }
            Ok(made)
        })
        .await
    }

    async fn get_access_key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        let key_id = owned(key_id);
        self.read(move |tx| {
            Ok(tx
                .prepare_cached(&KEY_BY_ID)?
                .query_row([key_id], key_row)
                .optional()?)
        })
        .await
    }

    async fn get_access_keys(&self, key_ids: &[String]) -> Result<Vec<KeyRecord>> {
        let key_ids = key_ids.to_vec();
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&KEY_BY_ID)?;
            let mut found = Vec::with_capacity(key_ids.len());
            for id in &key_ids {
                found.extend(stmt.query_row([id], key_row).optional()?);
            }
            Ok(found)
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
            let owner = owner_id(tx, &account_id, user_name.as_deref())?;
            let mut stmt = tx.prepare(&format!(
                "SELECT {KEY_COLS} FROM {KEY_FROM}
                 WHERE k.account_id = ?1 AND k.user_id IS ?2 ORDER BY k.created_ms, k.key_id"
            ))?;
            let keys = stmt
                .query_map(params![account_id, owner], key_row)?
                .map(|r| r.map(|rec| rec.key))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys)
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
        self.write(move |tx| {
            let owner = owner_id(tx, &account_id, user_name.as_deref())?;
            let n = tx.exec(
                "UPDATE access_keys SET status = ?4
                 WHERE key_id = ?1 AND account_id = ?2 AND user_id IS ?3",
                params![key_id, account_id, owner, status.as_str()],
            )?;
            if n == 0 {
                return Err(StoreError::no_such_key(&key_id).into());
            }
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn delete_access_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
    ) -> Result<()> {
        let (account_id, user_name, key_id) =
            (owned(account_id), user_name.map(owned), owned(key_id));
        self.write(move |tx| {
            let owner = owner_id(tx, &account_id, user_name.as_deref())?;
            let n = tx.exec(
                "DELETE FROM access_keys WHERE key_id = ?1 AND account_id = ?2 AND user_id IS ?3",
                params![key_id, account_id, owner],
            )?;
            if n == 0 {
                return Err(StoreError::no_such_key(&key_id).into());
            }
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn record_key_usage(&self, batch: Vec<(String, LastUsed)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE access_keys
                 SET last_used_ms = ?2, last_used_service = ?3, last_used_region = ?4
                 WHERE key_id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)",
            )?;
            for (key_id, used) in &batch {
                stmt.execute(params![
                    key_id,
                    to_millis(used.when),
                    used.service,
                    used.region
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn set_account_alias(&self, account_id: &str, alias: &str) -> Result<()> {
        let (account_id, alias) = (owned(account_id), owned(alias));
        self.write(move |tx| {
            let holder: Option<String> = tx
                .query_row(
                    "SELECT account_id FROM account_aliases WHERE alias = ?1",
                    [&alias],
                    |r| r.get(0),
                )
                .optional()?;
            match holder {
                Some(h) if h == account_id => return Ok(()),
                Some(_) => {
                    return Err(StoreError::EntityAlreadyExists(format!(
                        "The account alias {alias} already exists."
                    ))
                    .into())
                }
                None => {}
            }
            if !account_exists(tx, &account_id)? {
                return Err(StoreError::no_such_account(&account_id).into());
            }
            // An account has at most one alias: a new one replaces the old (as AWS does).
            tx.exec(
                "DELETE FROM account_aliases WHERE account_id = ?1",
                [&account_id],
            )?;
            tx.exec(
                "INSERT INTO account_aliases (alias, account_id) VALUES (?1, ?2)",
                params![alias, account_id],
            )?;
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn list_account_aliases(&self, account_id: &str) -> Result<Vec<String>> {
        let account_id = owned(account_id);
        self.read(move |tx| {
            let mut stmt = tx.prepare(
                "SELECT alias FROM account_aliases WHERE account_id = ?1 ORDER BY alias",
            )?;
            let aliases = stmt
                .query_map([account_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(aliases)
        })
        .await
    }

    async fn delete_account_alias(&self, account_id: &str, alias: &str) -> Result<()> {
        let (account_id, alias) = (owned(account_id), owned(alias));
        self.write(move |tx| {
            let n = tx.exec(
                "DELETE FROM account_aliases WHERE account_id = ?1 AND alias = ?2",
                params![account_id, alias],
            )?;
            if n == 0 {
                return Err(StoreError::NoSuchEntity(format!(
                    "The account alias {alias} cannot be found."
                ))
                .into());
            }
            bump(tx)?;
            Ok(())
        })
        .await
    }

    async fn change_stamp(&self) -> Result<u64> {
        self.read(|tx| {
            let v: i64 = tx.row("SELECT value FROM change_stamp WHERE id = 1", [], |r| {
                r.get(0)
            })?;
            Ok(u64::try_from(v).unwrap_or(0))
        })
        .await
    }

    async fn append_event_batches(&self, batches: Vec<PackedBatch>, synced: bool) -> Result<()> {
        let write = move |tx: &Transaction<'_>| {
            for b in &batches {
                let exists = tx
                    .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")?
                    .exists(params![b.account_id])?;
                if exists {
                    insert_batch(tx, b)?;
                }
            }
            Ok(())
        };
        self.write_synced(write, synced).await
    }

    async fn event_batches(&self, q: BatchQuery) -> Result<Vec<BatchRow>> {
        self.read(move |tx| {
            let (after_ms, after_seq) = q.after.unwrap_or((i64::MAX, i64::MAX));
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let mut stmt = tx.prepare_cached(
                "SELECT seq, max_ms, data FROM audit_batches
                 WHERE account_id = ?1 AND max_ms >= ?2 AND min_ms <= ?3
                   AND (max_ms, seq) < (?4, ?5)
                 ORDER BY max_ms DESC, seq DESC LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    q.account_id,
                    q.start_ms,
                    q.end_ms,
                    after_ms,
                    after_seq,
                    limit
                ],
                |r| {
                    Ok(BatchRow {
                        seq: r.get(0)?,
                        max_ms: r.get(1)?,
                        data: r.get(2)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn prune_events(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM audit_batches WHERE seq IN
                     (SELECT seq FROM audit_batches WHERE max_ms < ?1 ORDER BY max_ms LIMIT ?2)
                 RETURNING events",
            )?;
            let gone = stmt.query_map(params![before_ms, limit], |r| r.get::<_, i64>(0))?;
            let mut n = 0u64;
            for events in gone {
                n += events?.max(0) as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        // The writer finishes the writes queued before this, then closes its connection.
        let (done, stopped) = oneshot::channel();
        if self.shared.writer.send(writer::Msg::Close(done)).is_ok() {
            let _ = stopped.await;
        }
        let idle = std::mem::take(&mut *self.shared.idle.lock().unwrap_or_else(|p| p.into_inner()));
        // Closing a connection may checkpoint the WAL: do it off the async runtime.
        tokio::task::spawn_blocking(move || drop(idle))
            .await
            .map_err(|e| StoreError::Unavailable(format!("closing the database failed: {e}")))
    }
}
