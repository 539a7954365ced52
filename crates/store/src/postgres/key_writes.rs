//! Group commit of access-key writes: CreateAccessKey and DeleteAccessKey.
//!
//! Run alone, each of these writes is one statement committed on its own, and PostgreSQL spends
//! more on the transaction around it (the round trip, the commit, the WAL flush) than on the
//! statement. So the key writes of a node go through one queue. A batcher task takes the first
//! write, then every write that queued up meanwhile, and those that the tasks ready to run queue
//! before it runs again (at most [`MAX_BATCH`]; see [`batcher`]):
//!
//! - One write, nothing else waiting: it runs as before, one statement committed on its own (one
//!   round trip; for CreateAccessKey, schema 7's function).
//! - Several: they run on one connection in one READ COMMITTED transaction, `BEGIN`, their
//!   statements and `COMMIT` sent at once (one round trip; PostgreSQL runs them in order). One
//!   WAL flush makes the batch durable, and only then is each caller answered: the durability of
//!   one transaction per call, the cost of one per batch. The SQLite engine's writer does the same
//!   (see `sqlite/writer.rs`).
//!
//! A batch's transaction: `BEGIN`; the owners' rows locked, sorted (accounts for roots' keys, then
//! users); each write's statement; the change stamp moved once, if a write changed something;
//! `COMMIT`.
//!
//! - Each write checks what it checks alone. A CreateAccessKey counts its owner's keys in a
//!   statement after the one that locked the owner (its own snapshot under READ COMMITTED, taken
//!   after the lock), so it sees the keys of every earlier write of the batch and of every other
//!   transaction that held the lock: the two-keys quota holds within a batch and across nodes.
//! - A write that finds nothing to do (an unknown user or key, the quota reached) changes nothing
//!   and is answered with its own error; the others commit.
//! - Locks are taken in the order the other writes take theirs (owners, then keys, then the
//!   change stamp's row last), so a batch cannot deadlock with a lone write. If PostgreSQL
//!   refuses a statement all the same (a deadlock between two nodes' batches, a timeout, any
//!   error), the transaction is rolled back and every write of the batch runs again alone, so
//!   each is answered as it would have been without batching. Nothing of the batch was committed.
//! - If the connection fails, whether the `COMMIT` happened is unknown: every write of the batch
//!   fails with that error, as a lone write's would.
//!
//! One batch runs at a time: a second one in flight made the batches smaller and the node slower
//! (measured, see docs/benchmarks.md). Deleted keys are announced ([`super::announce`]) once
//! committed, in one statement per batch, before the callers are answered.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use super::{
    announce, count, count_at, exec, fold, insert_batch, opt_row, pool_error, FResult, Fail,
    CALL_TIMEOUT, INSERT_BATCH_IF_ACCOUNT,
};
use crate::backend::{NewKey, Result};
use crate::events::EventBatch;
use crate::held::{held, HeldCommit, HeldEvents, Holder};
use crate::model::{from_millis, AccessKey, KeyStatus};
use crate::{Change, StoreError};

/// The most writes one transaction takes.
const MAX_BATCH: usize = 64;
/// Writes waiting for the batcher; a caller past this waits to queue.
const QUEUE: usize = 1024;
/// The longest a held batch waits for its requests' audit events, its owners' rows locked. A
/// request puts its event within microseconds of its answer; one that has not by then (a stalled
/// or dropped request) is committed without it and stores its event the usual way.
const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A queued access-key write and the channel its caller waits on.
pub(super) enum KeyWrite {
    /// CreateAccessKey: the owner exists, has fewer than `max_keys` keys, the id is free.
    Insert {
        key: NewKey,
        max_keys: usize,
        reply: oneshot::Sender<Result<AccessKey>>,
        /// The request holds its commit (see [`crate::held`]): where its hold goes.
        hold: Option<oneshot::Sender<HeldCommit>>,
    },
    /// DeleteAccessKey: the key exists and is the owner's.
    Delete {
        target: KeyDelete,
        reply: oneshot::Sender<Result<()>>,
        /// As for `Insert`.
        hold: Option<oneshot::Sender<HeldCommit>>,
    },
}

/// Which key to delete, and whose it must be.
pub(super) struct KeyDelete {
    pub(super) account_id: String,
    /// `None`: the account's root.
    pub(super) user_name: Option<String>,
    pub(super) key_id: String,
}

impl KeyDelete {
    /// Of `sql`, the text for this key's owner (a user, or the root).
    fn sql(&self, sql: DeleteSql) -> &'static str {
        sql[usize::from(self.user_name.is_none())]
    }

    /// Runs the delete's statement ($1 account, $2 key id, $3 folded user name).
    async fn execute<C: GenericClient + Sync>(
        &self,
        c: &C,
        sql: DeleteSql,
    ) -> FResult<Option<Row>> {
        match &self.user_name {
            Some(name) => {
                opt_row(
                    c,
                    self.sql(sql),
                    &[&self.account_id, &self.key_id, &fold(name)],
                )
                .await
            }
            None => opt_row(c, self.sql(sql), &[&self.account_id, &self.key_id]).await,
        }
    }
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
        // The writes that arrived while the previous batch ran join this one. So do those that
        // tasks ready to run are about to queue: callers answered together (by the previous
        // batch) queue their next writes one after the other, the first waking this task, which
        // would otherwise take it alone. So the other tasks run first, until a turn brings
        // nothing new.
        let mut batch = vec![first];
        loop {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == MAX_BATCH {
                break;
            }
        }
        run(&pool, batch).await;
    }
}

/// Runs a batch and answers every caller.
async fn run(pool: &Pool, mut batch: Vec<KeyWrite>) {
    let held = batch.iter().any(KeyWrite::is_held);
    if batch.len() == 1 && !held {
        if let Some(w) = batch.pop() {
            run_alone(pool, w).await;
        }
        return;
    }
    // Stable: the writes of one owner keep their order. (The owners are locked in order before
    // any write; the deletes then lock their keys in this order.)
    batch.sort_by_cached_key(KeyWrite::owner);
    if held {
        return run_held(pool, batch).await;
    }
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

/// Runs a batch with held writes (see [`crate::held`]) in two round trips: `BEGIN`, the locks,
/// the writes and the change stamp; then, once every held request has put its audit event (or
/// [`HOLD_WAIT`] passed), the events and `COMMIT`. A held write that succeeded is answered
/// between the two, with its [`HeldCommit`], which learns the commit's outcome; the others are
/// answered once committed. A refused statement rolls back and every write runs alone, unheld.
async fn run_held(pool: &Pool, batch: Vec<KeyWrite>) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            let e = pool_error(e);
            for w in batch {
                w.answer_err(same(&e));
            }
            return;
        }
    };
    let opened = if let [w] = batch.as_slice() {
        alone_on(&client, w).await
    } else {
        together_on(&client, &batch, false).await
    };
    let rows = match opened {
        (Together::Committed(rows), _) => rows,
        (Together::Refused, _) => {
            // The transaction is aborted: end it before the connection goes back to the pool.
            if client.batch_execute("ROLLBACK").await.is_err() {
                let _ = Object::take(client);
            }
            let alone: Vec<_> = batch.into_iter().map(|w| run_alone(pool, w)).collect();
            join_in_order(alone).await;
            return;
        }
        (Together::Failed(e), _) => {
            let _ = Object::take(client);
            for w in batch {
                w.answer_err(same(&e));
            }
            return;
        }
    };
    let changes: Vec<Change> = batch
        .iter()
        .zip(&rows)
        .filter_map(|(w, row)| w.change_of(row.as_ref()))
        .collect();
    let events: HeldEvents = std::sync::Arc::new(std::sync::Mutex::new(Some(EventBatch::new())));
    let mut holders: Vec<Holder> = Vec::new();
    let mut deferred = Vec::new();
    for (w, row) in batch.into_iter().zip(rows) {
        if w.is_held() {
            holders.extend(w.answer_held(row, &events));
        } else {
            deferred.push((w, row));
        }
    }
    let (readies, outcomes): (Vec<_>, Vec<_>) =
        holders.into_iter().map(|h| (h.ready, h.outcome)).unzip();
    let _ = tokio::time::timeout(HOLD_WAIT, async {
        for r in readies {
            let _ = r.await;
        }
    })
    .await;
    let packed = events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(EventBatch::finish)
        .unwrap_or_default();
    let work = async {
        if !packed.is_empty() {
            // Prepared first, so that the inserts are sent before the COMMIT (see `together_on`).
            client.prepare_cached(INSERT_BATCH_IF_ACCOUNT).await?;
        }
        let mut steps: Vec<Step<'_>> = packed
            .iter()
            .map(|b| -> Step<'_> {
                Box::pin(async { insert_batch(&client, b, true).await.map(drop) })
            })
            .collect();
        steps.push(Box::pin(async {
            Ok(client.batch_execute("COMMIT").await?)
        }));
        // Any error (a refused insert makes the COMMIT roll back silently) fails the batch.
        join_in_order(steps)
            .await
            .into_iter()
            .collect::<FResult<Vec<()>>>()
    };
    let outcome = match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StoreError::from(e)),
        Err(_) => Err(no_answer()),
    };
    match outcome {
        Ok(()) => {
            announce(pool, &changes).await;
            for o in outcomes {
                let _ = o.send(Ok(()));
            }
            for (w, row) in deferred {
                w.answer(Ok(row));
            }
        }
        Err(e) => {
            let _ = Object::take(client);
            for o in outcomes {
                let _ = o.send(Err(same(&e)));
            }
            for (w, _) in deferred {
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
            w.answer_err(no_answer());
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

/// A statement of a batch other than its writes.
type Step<'a> = Pin<Box<dyn Future<Output = FResult<()>> + Send + 'a>>;

/// Runs the batch in one transaction, every statement sent at once (one round trip; PostgreSQL
/// runs them in order): `BEGIN`, the owners' locks, the writes, the change stamp, `COMMIT`.
async fn together(pool: &Pool, batch: &[KeyWrite]) -> Together {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return Together::Failed(pool_error(e)),
    };
    let (done, timed_out) = together_on(&client, batch, true).await;
    if timed_out {
        let _ = Object::take(client);
    }
    done
}

/// One held write in an open transaction: `BEGIN` and its lone statement (schema 7's function, or
/// the delete that moves the change stamp itself) sent at once, one round trip and two statements
/// where a batch's locks and stamp take four. Answers as [`together_on`] without `commit`.
async fn alone_on(client: &Object, w: &KeyWrite) -> (Together, bool) {
    let work = async {
        let statement = w.alone_statement();
        client.prepare_cached(statement).await?;
        let begin: Step<'_> = Box::pin(async { Ok(client.batch_execute("BEGIN").await?) });
        let write = Box::pin(w.execute_alone(client));
        let (began, row, ()) = in_order3(begin, write, Box::pin(async {})).await;
        FResult::Ok((began, row))
    };
    let (began, row) = match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return (Together::Failed(e.into()), false),
        Err(_) => return (Together::Failed(no_answer()), true),
    };
    let answered = |e: &Fail| matches!(e, Fail::Db(e) if e.as_db_error().is_some());
    let done = match (began, row) {
        (Ok(()), Ok(row)) => Together::Committed(vec![row]),
        (Err(e), _) | (_, Err(e)) if !answered(&e) => Together::Failed(e.into()),
        _ => Together::Refused,
    };
    (done, false)
}

/// [`together`] on `client`; without `commit` the transaction is left open after the change
/// stamp (`Committed` then means: every statement done). Also says whether it timed out (the
/// connection is then to be discarded).
async fn together_on(client: &Object, batch: &[KeyWrite], commit: bool) -> (Together, bool) {
    let mut root_accounts: Vec<&str> = Vec::new();
    let (mut user_accounts, mut user_names): (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
    for w in batch {
        match w {
            KeyWrite::Insert { key, .. } => match &key.user_name {
                Some(name) => {
                    user_accounts.push(&key.account_id);
                    user_names.push(fold(name));
                }
                None => root_accounts.push(&key.account_id),
            },
            KeyWrite::Delete { .. } => {}
        }
    }
    let work = async {
        // Prepared first (from the connection's cache, once warm): a statement sends its request
        // on its first poll only when it need not be prepared, and the order of the requests is
        // the order of the transaction.
        for sql in [LOCK_ACCOUNTS, LOCK_USERS, BUMP] {
            client.prepare_cached(sql).await?;
        }
        for w in batch {
            client.prepare_cached(w.statement()).await?;
        }
        let mut head: Vec<Step<'_>> =
            vec![Box::pin(async { Ok(client.batch_execute("BEGIN").await?) })];
        if !root_accounts.is_empty() {
            head.push(Box::pin(async {
                exec(client, LOCK_ACCOUNTS, &[&root_accounts])
                    .await
                    .map(drop)
            }));
        }
        if !user_accounts.is_empty() {
            head.push(Box::pin(async {
                exec(client, LOCK_USERS, &[&user_accounts, &user_names])
                    .await
                    .map(drop)
            }));
        }
        let writes = join_in_order(batch.iter().map(|w| w.execute(client)).collect());
        let mut tail: Vec<Step<'_>> =
            vec![Box::pin(async { exec(client, BUMP, &[]).await.map(drop) })];
        if commit {
            tail.push(Box::pin(async {
                Ok(client.batch_execute("COMMIT").await?)
            }));
        }
        let (head, rows, tail) = in_order3(
            Box::pin(join_in_order(head)),
            Box::pin(writes),
            Box::pin(join_in_order(tail)),
        )
        .await;
        FResult::Ok((head, rows, tail))
    };
    let (head, rows, tail) = match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return (Together::Failed(e.into()), false),
        Err(_) => {
            return (Together::Failed(no_answer()), true);
        }
    };
    let mut errors: Vec<Fail> = Vec::new();
    let mut ok = Vec::with_capacity(rows.len());
    errors.extend(head.into_iter().filter_map(|r| r.err()));
    for r in rows {
        match r {
            Ok(row) => ok.push(row),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(tail.into_iter().filter_map(|r| r.err()));
    // A `COMMIT` after a refused statement rolls back (and answers without an error).
    let answered = |e: &Fail| matches!(e, Fail::Db(e) if e.as_db_error().is_some());
    let done = match errors.iter().position(|e| !answered(e)) {
        // The connection failed (or the store refused something): the COMMIT's outcome is unknown.
        Some(i) => Together::Failed(errors.swap_remove(i).into()),
        // Every error is PostgreSQL's answer, so the server got to the COMMIT: rolled back.
        None if !errors.is_empty() => Together::Refused,
        None => Together::Committed(ok),
    };
    (done, false)
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

/// A call that got no answer within [`CALL_TIMEOUT`].
fn no_answer() -> StoreError {
    StoreError::Unavailable(format!("no answer from PostgreSQL within {CALL_TIMEOUT:?}"))
}

/// The error that failed a whole batch, for each of its writes.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

// A batch's locks are taken in one order, the order of the other writes: owners' rows first
// (accounts, for roots' keys, then users, each sorted, as a rename locks its account then its
// user), then keys' rows (the deletes, as UpdateAccessKey locks a key after reading its owner),
// then the change stamp's row, last, as every lone write does. So a batch cannot deadlock with a
// lone write of any kind; two batches of two nodes could only through keys deleted in different
// orders, which PostgreSQL detects and the batch then retries its writes alone.

/// Locks the accounts of the batch's root-key creations, in order.
const LOCK_ACCOUNTS: &str =
    "SELECT 1 FROM accounts WHERE account_id = ANY($1) ORDER BY account_id FOR NO KEY UPDATE";
/// Locks the users of the batch's key creations, in order: the arrays come sorted (the batch is
/// sorted by owner, in byte order, as `COLLATE "C"` sorts), and each user is locked by its own
/// index lookup in that order. (A `WHERE (account_id, name_lc) IN (unnest(...))` form let the
/// planner pick a hash join over a sequential scan of every user when its statistics were stale:
/// 1.6 ms a batch with 10,000 users, seen with auto_explain.)
const LOCK_USERS: &str = "SELECT 1 FROM unnest($1::text[], $2::text[]) AS w(account_id, name_lc),
     LATERAL (SELECT 1 FROM users u
              WHERE u.account_id = w.account_id AND u.name_lc = w.name_lc
              FOR NO KEY UPDATE) AS locked";
/// CreateAccessKey of a user's key in a batch, its user locked by [`LOCK_USERS`] before: a new
/// statement, so it reads a snapshot taken after the lock and sees every key that the lock's
/// previous holders committed (one statement that locked and counted could not: under READ
/// COMMITTED a statement that waited for a row lock re-reads that row only). Counts the user's
/// keys and inserts one below the quota unless the id is taken. Its row: (found, user id, user
/// name as stored, keys before, inserted), as schema 7's function's; if inserted it marks the
/// transaction changed for [`BUMP`].
const INSERT_USER: &str =
    "WITH o AS (SELECT user_id, name FROM users WHERE account_id = $1 AND name_lc = $2),
     n AS (SELECT COUNT(*) AS n FROM access_keys
           WHERE account_id = $1 AND user_id = (SELECT user_id FROM o)),
     i AS (INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
           SELECT $3::text, $1, o.user_id, 'Active', $4::bytea, $5::bigint FROM o
           WHERE (SELECT n FROM n) < $6::bigint
           ON CONFLICT (key_id) DO NOTHING RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM o), (SELECT user_id FROM o), (SELECT name FROM o),
            (SELECT n FROM n), EXISTS (SELECT 1 FROM i),
            CASE WHEN EXISTS (SELECT 1 FROM i) THEN set_config('keyward.changed', 'yes', true) END";
/// [`INSERT_USER`] for a root's key ($2, the user name, NULL), its account locked by
/// [`LOCK_ACCOUNTS`] before.
const INSERT_ROOT: &str =
    "WITH o AS (SELECT 1 FROM accounts WHERE account_id = $1 AND $2::text IS NULL),
     n AS (SELECT COUNT(*) AS n FROM access_keys WHERE account_id = $1 AND user_id IS NULL),
     i AS (INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
           SELECT $3::text, $1, NULL, 'Active', $4::bytea, $5::bigint FROM o
           WHERE (SELECT n FROM n) < $6::bigint
           ON CONFLICT (key_id) DO NOTHING RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM o), NULL::text, NULL::text,
            (SELECT n FROM n), EXISTS (SELECT 1 FROM i),
            CASE WHEN EXISTS (SELECT 1 FROM i) THEN set_config('keyward.changed', 'yes', true) END";
/// DeleteAccessKey's common part, a user's key: finds the user, deletes the key if it is the
/// user's.
macro_rules! delete_user {
    () => {
        "WITH o AS (SELECT user_id FROM users WHERE account_id = $1 AND name_lc = $3),
         d AS (DELETE FROM access_keys
               WHERE key_id = $2 AND account_id = $1 AND user_id = (SELECT user_id FROM o)
               RETURNING key_id)"
    };
}
/// DeleteAccessKey's common part, a root's key.
macro_rules! delete_root {
    () => {
        "WITH o AS (SELECT 1 FROM accounts WHERE account_id = $1),
         d AS (DELETE FROM access_keys
               WHERE key_id = $2 AND account_id = $1 AND user_id IS NULL
                 AND EXISTS (SELECT 1 FROM o)
               RETURNING key_id)"
    };
}
/// DeleteAccessKey in a batch: its row is (owners found, keys deleted); if deleted it marks the
/// transaction changed for [`BUMP`].
macro_rules! delete_in_batch {
    ($head:expr) => {
        concat!(
            $head,
            " SELECT (SELECT COUNT(*) FROM o), (SELECT COUNT(*) FROM d),
                     CASE WHEN EXISTS (SELECT 1 FROM d)
                          THEN set_config('keyward.changed', 'yes', true) END"
        )
    };
}
/// A lone DeleteAccessKey, committed on its own: its row is (owners found, keys deleted, stamp
/// rows moved); if deleted it moves the change stamp itself.
macro_rules! delete_alone {
    ($head:expr) => {
        concat!(
            $head,
            ", b AS (UPDATE change_stamp SET value = value + 1 WHERE id = ",
            stamp_row!(),
            " AND EXISTS (SELECT 1 FROM d) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM o), (SELECT COUNT(*) FROM d), (SELECT COUNT(*) FROM b)"
        )
    };
}
/// The two SQL texts of a DeleteAccessKey: for a user's key, for a root's.
type DeleteSql = [&'static str; 2];
/// DeleteAccessKey in a batch.
const DELETE_IN_BATCH: DeleteSql = [
    delete_in_batch!(delete_user!()),
    delete_in_batch!(delete_root!()),
];
/// A lone CreateAccessKey: schema 7's function.
const INSERT_ALONE: &str = "SELECT o_found, o_user_id, o_name, o_count, o_inserted
     FROM keyward_insert_access_key($1, $2, $3, $4, $5, $6)";
/// A lone DeleteAccessKey.
const DELETE_ALONE: DeleteSql = [delete_alone!(delete_user!()), delete_alone!(delete_root!())];
/// Moves the change stamp once for the batch, last (see above), if one of its writes changed
/// something: each write that did sets the transaction-local `keyward.changed`.
const BUMP: &str = concat!(
    "UPDATE change_stamp SET value = value + 1 WHERE id = ",
    stamp_row!(),
    " AND current_setting('keyward.changed', true) = 'yes'"
);
impl KeyWrite {
    /// The row that the write locks: its account, then its user (`None` for the root).
    fn owner(&self) -> (String, Option<String>) {
        match self {
            KeyWrite::Insert { key, .. } => {
                (key.account_id.clone(), key.user_name.as_deref().map(fold))
            }
            KeyWrite::Delete { target, .. } => (
                target.account_id.clone(),
                target.user_name.as_deref().map(fold),
            ),
        }
    }

    /// The SQL of the write's statement in a batch.
    fn statement(&self) -> &'static str {
        match self {
            KeyWrite::Insert { key, .. } if key.user_name.is_some() => INSERT_USER,
            KeyWrite::Insert { .. } => INSERT_ROOT,
            KeyWrite::Delete { target, .. } => target.sql(DELETE_IN_BATCH),
        }
    }

    /// Sends the write's statement in a batch (on the first poll, once prepared) and returns its
    /// row; the owner's row is locked before ([`LOCK_USERS`], [`LOCK_ACCOUNTS`]).
    async fn execute<C: GenericClient + Sync>(&self, c: &C) -> FResult<Option<Row>> {
        match self {
            KeyWrite::Insert { key, max_keys, .. } => {
                insert(c, self.statement(), key, *max_keys).await
            }
            KeyWrite::Delete { target, .. } => target.execute(c, DELETE_IN_BATCH).await,
        }
    }

    /// The SQL of the write's lone statement ([`KeyWrite::execute_alone`]).
    fn alone_statement(&self) -> &'static str {
        match self {
            KeyWrite::Insert { .. } => INSERT_ALONE,
            KeyWrite::Delete { target, .. } => target.sql(DELETE_ALONE),
        }
    }

    /// The write as one statement (committed on its own): for CreateAccessKey, schema 7's
    /// function, which takes the lock and then counts in one call.
    async fn execute_alone<C: GenericClient + Sync>(&self, c: &C) -> FResult<Option<Row>> {
        match self {
            KeyWrite::Insert { key, max_keys, .. } => insert(c, INSERT_ALONE, key, *max_keys).await,
            KeyWrite::Delete { target, .. } => target.execute(c, DELETE_ALONE).await,
        }
    }

    /// What a committed write changed that caches must hear of: a deleted key.
    fn change(&self, r: &Result<Option<Row>>) -> Option<Change> {
        self.change_of(r.as_ref().ok()?.as_ref())
    }

    /// [`KeyWrite::change`] from the write's row.
    fn change_of(&self, row: Option<&Row>) -> Option<Change> {
        match (self, row) {
            (KeyWrite::Delete { target, .. }, Some(row)) => {
                let deleted: i64 = row.try_get(1).ok()?;
                (deleted > 0).then(|| Change::AccessKey(target.key_id.clone()))
            }
            _ => None,
        }
    }

    /// Whether the caller holds its commit (see [`crate::held`]).
    fn is_held(&self) -> bool {
        match self {
            KeyWrite::Insert { hold, .. } | KeyWrite::Delete { hold, .. } => hold.is_some(),
        }
    }

    /// Answers the caller from the write's row.
    fn answer(self, r: Result<Option<Row>>) {
        match self {
            KeyWrite::Insert {
                key,
                max_keys,
                reply,
                ..
            } => {
                let _ = reply.send(r.and_then(|row| inserted(&key, max_keys, row)));
            }
            KeyWrite::Delete { target, reply, .. } => {
                let _ = reply.send(r.and_then(|row| deleted(&target, row)));
            }
        }
    }

    /// Answers a held caller from its row, its transaction still open: if the write succeeded,
    /// its [`HeldCommit`] (sharing the batch's `events`) goes to the caller first, and the batch
    /// keeps the other side. A write that failed changed nothing and is answered as usual.
    fn answer_held(self, row: Option<Row>, events: &HeldEvents) -> Option<Holder> {
        fn hand<T>(
            r: Result<T>,
            reply: oneshot::Sender<Result<T>>,
            hold: Option<oneshot::Sender<HeldCommit>>,
            events: &HeldEvents,
        ) -> Option<Holder> {
            let holder = match (&r, hold) {
                (Ok(_), Some(hold)) => {
                    let (commit, holder) = held(events);
                    // A caller gone meanwhile is not waited for.
                    hold.send(commit).ok().map(|()| holder)
                }
                _ => None,
            };
            let _ = reply.send(r);
            holder
        }
        match self {
            KeyWrite::Insert {
                key,
                max_keys,
                reply,
                hold,
            } => hand(inserted(&key, max_keys, row), reply, hold, events),
            KeyWrite::Delete {
                target,
                reply,
                hold,
            } => hand(deleted(&target, row), reply, hold, events),
        }
    }

    fn answer_err(self, e: StoreError) {
        self.answer(Err(e))
    }
}

/// Runs a CreateAccessKey statement ([`INSERT_USER`], [`INSERT_ROOT`] or schema 7's function):
/// $1 account, $2 folded user name (NULL for the root), $3 key id, $4 sealed secret, $5 creation
/// time, $6 the most keys the owner may have.
async fn insert<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    key: &NewKey,
    max_keys: usize,
) -> FResult<Option<Row>> {
    let max = i64::try_from(max_keys).unwrap_or(i64::MAX);
    let name_lc = key.user_name.as_deref().map(fold);
    opt_row(
        c,
        sql,
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
