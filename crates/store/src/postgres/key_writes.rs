//! Group commit of access-key writes: CreateAccessKey and DeleteAccessKey.
//!
//! Run alone, each of these writes is one statement committed on its own, and PostgreSQL spends
//! more on the transaction around it (the round trip, the commit, the WAL flush) than on the
//! statement. So the key writes of a node go through one queue. A batcher task takes the first
//! write, then every write that queued up meanwhile (at most [`MAX_BATCH`]):
//!
//! - One write, nothing else waiting: it runs as before, one statement committed on its own (one
//!   round trip; for CreateAccessKey, schema 7's function).
//! - Several: they run on one connection in one READ COMMITTED transaction, `BEGIN`, their
//!   statements and `COMMIT` sent at once (one round trip; PostgreSQL runs them in order). One
//!   WAL flush makes the batch durable, and only then is each caller answered: the durability of
//!   one transaction per call, the cost of one per batch. The SQLite engine's writer does the same
//!   (see `sqlite/writer.rs`).
//!
//! Within a batch:
//!
//! - Each write checks what it checks alone. CreateAccessKey locks the owner's row, then counts in
//!   a new statement (its own snapshot under READ COMMITTED, taken after the lock), so it sees the
//!   keys of every earlier write of the batch and of every other transaction that held the lock.
//! - A write that finds nothing to do (an unknown user or key, the quota reached) changes nothing
//!   and is answered with its own error; the others commit.
//! - If PostgreSQL refuses a statement (a deadlock with another node, a timeout, any error), the
//!   transaction is rolled back and every write of the batch runs again alone, so each is
//!   answered as it would have been without batching. Nothing of the batch was committed.
//! - If the connection fails, whether the `COMMIT` happened is unknown: every write of the batch
//!   fails with that error, as a lone write's would.
//! - The writes are ordered by owner, so two batches (of two nodes) lock owners in the same order.
//!
//! One batch runs at a time: a second one in flight made the batches smaller and the node slower
//! (measured, see docs/benchmarks.md), and a single batch cannot deadlock with another of its node.
//! Deleted keys are announced ([`super::announce`]) once committed, in one statement per batch,
//! before the callers are answered.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{
    announce, count, count_at, fold, opt_row, pool_error, rows, FResult, Fail, CALL_TIMEOUT,
};
use crate::backend::{NewKey, Result};
use crate::model::{from_millis, AccessKey, KeyStatus};
use crate::{Change, StoreError};

/// The most writes one transaction takes.
pub(super) const MAX_BATCH: usize = 64;
/// Writes waiting for the batcher; a caller past this waits to queue.
const QUEUE: usize = 1024;

/// A queued access-key write and the channel its caller waits on.
pub(super) enum KeyWrite {
    /// CreateAccessKey: the owner exists, has fewer than `max_keys` keys, the id is free.
    Insert {
        key: NewKey,
        max_keys: usize,
        reply: oneshot::Sender<Result<AccessKey>>,
    },
    /// DeleteAccessKey: the key exists and is the owner's.
    Delete {
        target: KeyDelete,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Which key to delete, and whose it must be.
pub(super) struct KeyDelete {
    pub(super) account_id: String,
    /// `None`: the account's root.
    pub(super) user_name: Option<String>,
    pub(super) key_id: String,
}

/// Starts the batcher on the current tokio runtime; it ends when the returned sender (and every
/// clone of it) is dropped.
pub(super) fn start(pool: Pool) -> mpsc::Sender<KeyWrite> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(batcher(pool, rx));
    tx
}

async fn batcher(pool: Pool, mut rx: mpsc::Receiver<KeyWrite>) {
    while let Some(first) = rx.recv().await {
        // The writes that arrived while the previous batch ran join this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        run(&pool, batch).await;
    }
}

/// Runs a batch and answers every caller.
pub(super) async fn run(pool: &Pool, mut batch: Vec<KeyWrite>) {
    if batch.len() == 1 {
        if let Some(w) = batch.pop() {
            run_alone(pool, w).await;
        }
        return;
    }
    // Stable: the writes of one owner keep their order.
    batch.sort_by(|a, b| a.owner().cmp(&b.owner()));
    match together(pool, &batch).await {
        Together::Committed(rows) => {
            settle(
                pool,
                batch.into_iter().zip(rows.into_iter().map(Ok)).collect(),
            )
            .await
        }
        Together::Refused => {
            // Rolled back: each write again, alone (concurrently, on connections of their own).
            let alone: Vec<_> = batch.into_iter().map(|w| run_alone(pool, w)).collect();
            join_in_order(alone).await;
        }
        Together::Failed(e) => {
            for w in batch {
                w.answer_err(same(&e));
            }
        }
    }
}

/// Runs one write as one statement, committed on its own (one round trip), and answers its
/// caller.
pub(super) async fn run_alone(pool: &Pool, w: KeyWrite) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return w.answer_err(pool_error(e)),
    };
    match tokio::time::timeout(CALL_TIMEOUT, w.execute_alone(&client)).await {
        Ok(r) => settle(pool, vec![(w, r.map_err(StoreError::from))]).await,
        Err(_) => {
            let _ = Object::take(client);
            w.answer_err(StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {CALL_TIMEOUT:?}"
            )));
        }
    }
}

/// What running a batch in one transaction came to.
enum Together {
    /// Committed: each write's row.
    Committed(Vec<Option<Row>>),
    /// PostgreSQL refused a statement or the commit: nothing was committed.
    Refused,
    /// No connection, or the connection failed (at the commit: the outcome is unknown).
    Failed(StoreError),
}

/// Runs the batch in one transaction: `BEGIN`, every write's statements and `COMMIT`, sent at
/// once (one round trip; PostgreSQL runs them in order).
async fn together(pool: &Pool, batch: &[KeyWrite]) -> Together {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return Together::Failed(pool_error(e)),
    };
    let work = async {
        // Prepared first (from the connection's cache, once warm): a statement sends its request
        // on its first poll only when it need not be prepared, and the order of the requests is
        // the order of the transaction.
        for w in batch {
            for sql in w.statements() {
                client.prepare_cached(sql).await?;
            }
        }
        let begin = Box::pin(client.batch_execute("BEGIN"));
        let writes = join_in_order(batch.iter().map(|w| w.execute(&client)).collect());
        let commit = Box::pin(client.batch_execute("COMMIT"));
        let (begin, rows, commit) = in_order3(begin, Box::pin(writes), commit).await;
        FResult::Ok((begin, rows, commit))
    };
    let (begin, rows, commit) = match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Together::Failed(e.into()),
        Err(_) => {
            let _ = Object::take(client);
            return Together::Failed(StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {CALL_TIMEOUT:?}"
            )));
        }
    };
    let mut errors: Vec<tokio_postgres::Error> = Vec::new();
    let mut ok = Vec::with_capacity(rows.len());
    errors.extend(begin.err());
    for r in rows {
        match r {
            Ok(row) => ok.push(row),
            Err(Fail::Db(e)) => errors.push(e),
            Err(Fail::Store(e)) => return Together::Failed(e),
        }
    }
    errors.extend(commit.err());
    // A `COMMIT` after a refused statement rolls back (and answers without an error).
    match errors
        .iter()
        .find(|e| e.as_db_error().is_none())
        .or(errors.first())
    {
        None => Together::Committed(ok),
        // Every error is PostgreSQL's answer, so the server got to the COMMIT: rolled back.
        Some(e) if e.as_db_error().is_some() => Together::Refused,
        // The connection failed: whether the COMMIT happened is unknown.
        Some(e) => Together::Failed(super::db_error(e)),
    }
}

/// Polls the futures in their order until all are done: each sends its request on its first
/// poll, so the requests go out in this order (`join_all` does not promise an order).
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in futures.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *d = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// [`join_in_order`] for three futures of different types.
async fn in_order3<A: Future + Unpin, B: Future + Unpin, C: Future + Unpin>(
    mut a: A,
    mut b: B,
    mut c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut ra, mut rb, mut rc) = (None, None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = Pin::new(&mut a).poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = Pin::new(&mut b).poll(cx) {
                rb = Some(v);
            }
        }
        if rc.is_none() {
            if let Poll::Ready(v) = Pin::new(&mut c).poll(cx) {
                rc = Some(v);
            }
        }
        match (ra.take(), rb.take(), rc.take()) {
            (Some(a), Some(b), Some(c)) => Poll::Ready((a, b, c)),
            (a, b, c) => {
                (ra, rb, rc) = (a, b, c);
                Poll::Pending
            }
        }
    })
    .await
}

/// Committed writes: announces the deleted keys, then answers every caller.
async fn settle(pool: &Pool, done: Vec<(KeyWrite, Result<Option<Row>>)>) {
    let changes: Vec<Change> = done.iter().filter_map(|(w, r)| w.change(r)).collect();
    announce(pool, &changes).await;
    for (w, r) in done {
        w.answer(r);
    }
}

/// The error that failed a whole batch, for each of its writes.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

// CreateAccessKey is two statements. The first locks the owner's row until commit, so concurrent
// creators for one owner, on any node, count one after the other. The second is a new statement,
// so it reads a new snapshot, taken after the lock: it sees every key the previous lock holder
// committed (one statement could not: under READ COMMITTED, a statement that waited for a row lock
// re-reads that row only, not what the count reads). It then inserts unless the owner is at the
// quota or the id is taken, and only if it inserted moves the change stamp. Its row:
// (found, user id, user name as stored, keys before, inserted). Schema 7's function did the same in
// plpgsql; PostgreSQL spends less on these two plain statements.

/// Locks a user's row (CreateAccessKey, first statement).
const LOCK_USER: &str =
    "SELECT 1 FROM users WHERE account_id = $1 AND name_lc = $2 FOR NO KEY UPDATE";
/// Locks an account's row, for its root (CreateAccessKey, first statement).
const LOCK_ROOT: &str = "SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE";
/// Counts a user's keys and inserts one below the quota (CreateAccessKey, second statement).
const INSERT_USER: &str = concat!(
    "WITH o AS (SELECT user_id, name FROM users WHERE account_id = $1 AND name_lc = $2),
     n AS (SELECT COUNT(*) AS n FROM access_keys
           WHERE account_id = $1 AND user_id = (SELECT user_id FROM o)),
     i AS (INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
           SELECT $3::text, $1, o.user_id, 'Active', $4::bytea, $5::bigint FROM o
           WHERE (SELECT n FROM n) < $6::bigint
           ON CONFLICT (key_id) DO NOTHING RETURNING 1),
     b AS (UPDATE change_stamp SET value = value + 1 WHERE id = ",
    stamp_row!(),
    " AND EXISTS (SELECT 1 FROM i) RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM o), (SELECT user_id FROM o), (SELECT name FROM o),
            (SELECT n FROM n), EXISTS (SELECT 1 FROM i), (SELECT COUNT(*) FROM b)"
);
/// Counts the root's keys and inserts one below the quota (CreateAccessKey, second statement).
const INSERT_ROOT: &str = concat!(
    "WITH o AS (SELECT 1 FROM accounts WHERE account_id = $1),
     n AS (SELECT COUNT(*) AS n FROM access_keys WHERE account_id = $1 AND user_id IS NULL),
     i AS (INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
           SELECT $2::text, $1, NULL, 'Active', $3::bytea, $4::bigint FROM o
           WHERE (SELECT n FROM n) < $5::bigint
           ON CONFLICT (key_id) DO NOTHING RETURNING 1),
     b AS (UPDATE change_stamp SET value = value + 1 WHERE id = ",
    stamp_row!(),
    " AND EXISTS (SELECT 1 FROM i) RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM o), NULL::text, NULL::text,
            (SELECT n FROM n), EXISTS (SELECT 1 FROM i), (SELECT COUNT(*) FROM b)"
);
/// DeleteAccessKey of a user's key: finds the user, deletes the key if it is the user's, moves
/// the change stamp only if deleted. Its row: (users found, keys deleted, stamp rows moved).
const DELETE_USER: &str = concat!(
    "WITH o AS (SELECT user_id FROM users WHERE account_id = $1 AND name_lc = $3),
     d AS (DELETE FROM access_keys
           WHERE key_id = $2 AND account_id = $1 AND user_id = (SELECT user_id FROM o)
           RETURNING key_id),
     b AS (UPDATE change_stamp SET value = value + 1 WHERE id = ",
    stamp_row!(),
    " AND EXISTS (SELECT 1 FROM d) RETURNING 1)
     SELECT (SELECT COUNT(*) FROM o), (SELECT COUNT(*) FROM d), (SELECT COUNT(*) FROM b)"
);
/// DeleteAccessKey of a root's key, as [`DELETE_USER`].
const DELETE_ROOT: &str = concat!(
    "WITH o AS (SELECT 1 FROM accounts WHERE account_id = $1),
     d AS (DELETE FROM access_keys
           WHERE key_id = $2 AND account_id = $1 AND user_id IS NULL
             AND EXISTS (SELECT 1 FROM o)
           RETURNING key_id),
     b AS (UPDATE change_stamp SET value = value + 1 WHERE id = ",
    stamp_row!(),
    " AND EXISTS (SELECT 1 FROM d) RETURNING 1)
     SELECT (SELECT COUNT(*) FROM o), (SELECT COUNT(*) FROM d), (SELECT COUNT(*) FROM b)"
);

impl KeyWrite {
    /// The row that the write locks: its account, then its user (`None` for the root).
    fn owner(&self) -> (&str, Option<String>) {
        match self {
            KeyWrite::Insert { key, .. } => (&key.account_id, key.user_name.as_deref().map(fold)),
            KeyWrite::Delete { target, .. } => {
                (&target.account_id, target.user_name.as_deref().map(fold))
            }
        }
    }

    /// The SQL of the write's statements.
    fn statements(&self) -> [&'static str; 2] {
        match self {
            KeyWrite::Insert { key, .. } if key.user_name.is_some() => [LOCK_USER, INSERT_USER],
            KeyWrite::Insert { .. } => [LOCK_ROOT, INSERT_ROOT],
            KeyWrite::Delete { target, .. } if target.user_name.is_some() => {
                [DELETE_USER, DELETE_USER]
            }
            KeyWrite::Delete { .. } => [DELETE_ROOT, DELETE_ROOT],
        }
    }

    /// Sends the write's statements (in order, on the first poll once they are prepared) and
    /// returns the row of its last one.
    async fn execute<C: GenericClient + Sync>(&self, c: &C) -> FResult<Option<Row>> {
        match self {
            KeyWrite::Insert { key, max_keys, .. } => {
                let max = i64::try_from(*max_keys).unwrap_or(i64::MAX);
                let name_lc = key.user_name.as_deref().map(fold);
                let (lock_sql, insert_sql) = match &name_lc {
                    Some(_) => (LOCK_USER, INSERT_USER),
                    None => (LOCK_ROOT, INSERT_ROOT),
                };
                let user_lock: [&(dyn ToSql + Sync); 2] = [&key.account_id, &name_lc];
                let user_insert: [&(dyn ToSql + Sync); 6] = [
                    &key.account_id,
                    &name_lc,
                    &key.key_id,
                    &key.sealed_secret,
                    &key.created_ms,
                    &max,
                ];
                let root_insert: [&(dyn ToSql + Sync); 5] = [
                    &key.account_id,
                    &key.key_id,
                    &key.sealed_secret,
                    &key.created_ms,
                    &max,
                ];
                let (lock_params, insert_params): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
                    match &name_lc {
                        Some(_) => (&user_lock, &user_insert),
                        None => (&user_lock[..1], &root_insert),
                    };
                let (locked, inserted, ()) = in_order3(
                    Box::pin(rows(c, lock_sql, lock_params)),
                    Box::pin(opt_row(c, insert_sql, insert_params)),
                    std::future::ready(()),
                )
                .await;
                locked?;
                inserted
            }
            KeyWrite::Delete { target, .. } => match &target.user_name {
                Some(name) => {
                    opt_row(
                        c,
                        DELETE_USER,
                        &[&target.account_id, &target.key_id, &fold(name)],
                    )
                    .await
                }
                None => opt_row(c, DELETE_ROOT, &[&target.account_id, &target.key_id]).await,
            },
        }
    }

    /// The write as one statement (committed on its own): for CreateAccessKey, schema 7's
    /// function, which takes the lock and then counts in one call.
    async fn execute_alone<C: GenericClient + Sync>(&self, c: &C) -> FResult<Option<Row>> {
        match self {
            KeyWrite::Insert { key, max_keys, .. } => {
                let max = i64::try_from(*max_keys).unwrap_or(i64::MAX);
                let name_lc = key.user_name.as_deref().map(fold);
                opt_row(
                    c,
                    "SELECT o_found, o_user_id, o_name, o_count, o_inserted
                     FROM keyward_insert_access_key($1, $2, $3, $4, $5, $6)",
                    &[
                        &key.account_id,
                        &name_lc,
                        &key.key_id,
                        &key.sealed_secret,
                        &key.created_ms,
                        &max,
                    ],
                )
                .await
            }
            KeyWrite::Delete { .. } => self.execute(c).await,
        }
    }

    /// What a committed write changed that caches must hear of: a deleted key.
    fn change(&self, r: &Result<Option<Row>>) -> Option<Change> {
        match (self, r) {
            (KeyWrite::Delete { target, .. }, Ok(Some(row))) => {
                let deleted: i64 = row.try_get(1).ok()?;
                (deleted > 0).then(|| Change::AccessKey(target.key_id.clone()))
            }
            _ => None,
        }
    }

    /// Answers the caller from the write's row.
    fn answer(self, r: Result<Option<Row>>) {
        match self {
            KeyWrite::Insert {
                key,
                max_keys,
                reply,
            } => {
                let _ = reply.send(r.and_then(|row| inserted(&key, max_keys, row)));
            }
            KeyWrite::Delete { target, reply } => {
                let _ = reply.send(r.and_then(|row| deleted(&target, row)));
            }
        }
    }

    fn answer_err(self, e: StoreError) {
        self.answer(Err(e))
    }
}

/// CreateAccessKey's outcome from its row.
fn inserted(key: &NewKey, max_keys: usize, row: Option<Row>) -> Result<AccessKey> {
    let outcome = || -> FResult<AccessKey> {
        let row = row.ok_or_else(|| StoreError::Unavailable("no row from an INSERT".into()))?;
        let found: bool = row.try_get(0)?;
        if !found {
            return Err(match &key.user_name {
                Some(name) => StoreError::no_such_user(name),
                None => StoreError::no_such_account(&key.account_id),
            }
            .into());
        }
        if count_at(&row, 3)? >= max_keys {
            return Err(StoreError::too_many_keys(max_keys).into());
        }
        let inserted: bool = row.try_get(4)?;
        if !inserted {
            return Err(StoreError::EntityAlreadyExists(format!(
                "Access key with id {} already exists.",
                key.key_id
            ))
            .into());
        }
        // Not announced: caches hold only keys they have read, and nobody has read this one.
        // (An announcement would make every listening node evict nothing, under its cache's
        // write lock.)
        Ok(AccessKey {
            key_id: key.key_id.clone(),
            account_id: key.account_id.clone(),
            // The user's name as stored (the caller may have used another case).
            user_name: row.try_get(2)?,
            status: KeyStatus::Active,
            created: from_millis(key.created_ms),
        })
    };
    outcome().map_err(StoreError::from)
}

/// DeleteAccessKey's outcome from its row.
fn deleted(target: &KeyDelete, row: Option<Row>) -> Result<()> {
    let outcome = || -> FResult<()> {
        let row = row.ok_or_else(|| StoreError::Unavailable("no row from a DELETE".into()))?;
        if count(&row)? == 0 {
            return Err(match &target.user_name {
                Some(name) => StoreError::no_such_user(name),
                None => StoreError::no_such_account(&target.account_id),
            }
            .into());
        }
        let deleted: i64 = row.try_get(1)?;
        if deleted == 0 {
            return Err(StoreError::no_such_key(&target.key_id).into());
        }
        Ok(())
    };
    outcome().map_err(StoreError::from)
}
