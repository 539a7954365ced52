//! The SQLite writer: one thread owns the write connection and applies queued writes in group
//! commits.
//!
//! Every write of the process is an operation sent to this thread. The thread takes the first one,
//! then every operation that queued up meanwhile (at most [`MAX_BATCH`]), and runs them in one
//! `BEGIN IMMEDIATE` transaction, each inside its own `SAVEPOINT`: an operation that fails (a quota,
//! a taken name, an SQL error) is rolled back to its savepoint and answered with its error, without
//! touching the others. Then one `COMMIT` (one WAL fsync with `synchronous=FULL`) makes the whole
//! batch durable, and only then is each caller answered. So durability is that of one transaction
//! per call, the write lock is taken once per batch instead of once per call, and with N callers
//! waiting one fsync serves N writes. A batch made only of writes that need not reach the disk
//! (audit events nobody waits for, see `Store::append_batch_unsynced`) commits with
//! `synchronous=NORMAL` instead: in WAL mode that skips the fsync, and the next synced commit or
//! checkpoint takes its pages to the disk with it.
//!
//! Operations run one after the other on one connection, in the order they were queued, so a check
//! followed by an insert (fewer than two keys?) sees every earlier operation of the batch; other
//! processes sharing the file still wait for the write lock (`BEGIN IMMEDIATE`, bounded by the
//! busy timeout) as before.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, TryRecvError};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{FResult, Fail};
use crate::backend::Result;
use crate::StoreError;

/// The most operations one transaction takes.
pub(super) const MAX_BATCH: usize = 256;

/// What the writer thread receives.
pub(super) enum Msg {
    /// A write to apply.
    Op(Box<dyn WriteOp>),
    /// Stop after the operations queued before this message; answer on the sender once the
    /// connection is closed.
    Close(oneshot::Sender<()>),
}

/// A queued write, type-erased: apply it inside the batch, then answer its caller.
pub(super) trait WriteOp: Send {
    /// Runs the operation inside the batch's transaction; `true` if it succeeded (its changes are
    /// to be kept).
    fn apply(&mut self, tx: &Transaction<'_>) -> bool;
    /// Answers the caller: `batch` is the outcome of the batch (its `COMMIT`, or the failure that
    /// stopped it). An operation that failed by itself is answered with its own error.
    fn finish(self: Box<Self>, batch: std::result::Result<(), &StoreError>);
    /// Whether the caller may only be answered once the write is on the disk.
    fn synced(&self) -> bool;
}

struct Op<T, F> {
    f: Option<F>,
    result: Option<FResult<T>>,
    reply: oneshot::Sender<Result<T>>,
    synced: bool,
}

/// Wraps a write closure and the channel its caller waits on; `synced`: the caller is answered
/// only once the write is on the disk.
pub(super) fn op<T, F>(f: F, reply: oneshot::Sender<Result<T>>, synced: bool) -> Box<dyn WriteOp>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> FResult<T> + Send + 'static,
{
    Box::new(Op {
        f: Some(f),
        result: None,
        reply,
        synced,
    })
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> FResult<T> + Send + 'static,
{
    fn apply(&mut self, tx: &Transaction<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|_| {
            Err(Fail::Store(StoreError::Unavailable(
                "a store write panicked; it was rolled back".into(),
            )))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, batch: std::result::Result<(), &StoreError>) {
        let answer = match (self.result, batch) {
            (Some(Err(e)), _) => Err(StoreError::from(e)),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(copy_error(e)),
            (None, Ok(())) => Err(StoreError::Unavailable("a store write was not run".into())),
        };
        // The caller may have gone away (its request was cancelled): the write stands regardless.
        let _ = self.reply.send(answer);
    }

    fn synced(&self) -> bool {
        self.synced
    }
}

/// The same failure for every operation of a batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Niceness of the writer thread (Linux): below the threads answering requests.
#[cfg(target_os = "linux")]
const WRITER_NICE: i32 = 10;

/// Gives this thread a lower CPU priority than the request threads, so that on a server with few
/// cores the writer's batches (audit events, last-used updates, WAL checkpoints) yield the core to
/// requests in progress rather than take whole time slices from them. The writer needs a few per
/// cent of a core (about 3 % at 65k audited requests/s), which nice 10 still gives it (about a tenth
/// of a saturated core), and all of it when requests leave the core idle. Measured effect on the
/// p99 of GetCallerIdentity with the audit trail on one core: 1.44 ms against 1.5-2.2 ms in earlier
/// runs, within the run-to-run spread, so it is kept for the reason above rather than for a proven
/// gain. Only the calling thread changes on Linux (`setpriority` on a thread id); elsewhere nothing
/// is done. Failure is harmless and ignored.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), WRITER_NICE);
    }
}

/// The writer thread's loop: runs until a [`Msg::Close`] or until every sender is gone.
pub(super) fn run(mut conn: Connection, queue: Receiver<Msg>) {
    lower_priority();
    let mut batch: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_BATCH);
    // The connection is opened with synchronous=FULL.
    let mut synced = true;
    loop {
        let mut closing = None;
        match queue.recv() {
            Ok(Msg::Op(op)) => batch.push(op),
            Ok(Msg::Close(done)) => closing = Some(done),
            Err(_) => break,
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if !batch.is_empty() {
            match set_synced(&conn, &mut synced, batch.iter().any(|op| op.synced())) {
                Ok(()) => commit_batch(&mut conn, &mut batch),
                Err(e) => {
                    for op in batch.drain(..) {
                        op.finish(Err(&e));
                    }
                }
            }
        }
        if let Some(done) = closing {
            // Closing the connection may checkpoint the WAL; answer once it is done.
            drop(conn);
            // Operations that raced with close are refused like any call on a closed store.
            while let Ok(msg) = queue.try_recv() {
                if let Msg::Op(op) = msg {
                    op.finish(Err(&StoreError::closed()));
                }
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Sets the connection's `synchronous` for the next commit: FULL when a write in it must reach the
/// disk, else NORMAL. A failed switch to NORMAL leaves FULL (only slower); a failed switch back to
/// FULL is an error, so no synced write is committed without its fsync.
fn set_synced(
    conn: &Connection,
    synced: &mut bool,
    want: bool,
) -> std::result::Result<(), StoreError> {
    if want == *synced {
        return Ok(());
    }
    let level = if want { "FULL" } else { "NORMAL" };
    match conn.pragma_update(None, "synchronous", level) {
        Ok(()) => {
            *synced = want;
            Ok(())
        }
        Err(e) if want => Err(StoreError::from(Fail::from(e))),
        Err(_) => Ok(()),
    }
}

/// Applies `batch` in one transaction and answers every operation after the commit.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Box<dyn WriteOp>>) {
    let outcome = apply_all(conn, batch);
    let outcome = outcome.map_err(StoreError::from);
    for op in batch.drain(..) {
        op.finish(outcome.as_ref().map(|_| ()));
    }
}

fn apply_all(conn: &mut Connection, batch: &mut [Box<dyn WriteOp>]) -> FResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Cached statements: parsing these four each time was ~8% of the writer's CPU (perf).
    let step = |sql: &str| -> FResult<()> {
        tx.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    for op in batch.iter_mut() {
        step("SAVEPOINT op")?;
        if op.apply(&tx) {
            step("RELEASE op")?;
        } else {
            step("ROLLBACK TO op")?;
            step("RELEASE op")?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn memory_db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        conn
    }

    fn insert(v: i64) -> impl FnOnce(&Transaction<'_>) -> FResult<i64> + Send + 'static {
        move |tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            Ok(v)
        }
    }

    #[test]
    fn a_batch_of_unsynced_writes_alone_commits_without_fsync() {
        // As the writer loop does: set_synced for the batch, then commit_batch. Each write reports
        // the connection's `synchronous` inside its transaction (1 NORMAL, 2 FULL).
        let mut conn = memory_db();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        let mut synced = true;
        let seen = |tx: &Transaction<'_>| -> FResult<i64> {
            Ok(tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
        };
        for (writes, level) in [
            (&[false][..], 1),
            (&[false, false], 1),
            (&[false, true, false], 2),
            (&[true], 2),
            (&[false], 1),
        ] {
            let (mut batch, mut answers) = (Vec::new(), Vec::new());
            for &s in writes {
                let (tx, rx) = oneshot::channel();
                batch.push(op(seen, tx, s));
                answers.push(rx);
            }
            set_synced(&conn, &mut synced, batch.iter().any(|o| o.synced())).unwrap();
            commit_batch(&mut conn, &mut batch);
            for mut rx in answers {
                assert_eq!(rx.try_recv().unwrap().unwrap(), level, "{writes:?}");
            }
        }
    }

    #[test]
    fn one_failing_op_does_not_fail_the_batch() {
        let mut conn = memory_db();
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for v in [1, 2, 1, 3] {
            let (tx, rx) = oneshot::channel();
            batch.push(op(insert(v), tx, true));
            answers.push(rx);
        }
        commit_batch(&mut conn, &mut batch);
        let got: Vec<bool> = answers
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap().is_ok())
            .collect();
        // The second insert of 1 breaks the primary key: only it fails.
        assert_eq!(got, [true, true, false, true]);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn a_failed_op_leaves_no_partial_change() {
        let mut conn = memory_db();
        let (tx, mut rx) = oneshot::channel();
        let partial = |tx: &Transaction<'_>| -> FResult<()> {
            tx.execute("INSERT INTO t (v) VALUES (10)", [])?;
            Err(Fail::Store(StoreError::LimitExceeded("no".into())))
        };
        let mut batch = vec![op(partial, tx, true)];
        commit_batch(&mut conn, &mut batch);
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(StoreError::LimitExceeded(_))
        ));
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_panicking_op_is_answered_and_the_thread_goes_on() {
        let (send, queue) = mpsc::channel();
        let handle = std::thread::spawn(move || run(memory_db(), queue));
        let (tx, mut bad) = oneshot::channel();
        send.send(Msg::Op(op(
            |_: &Transaction<'_>| -> FResult<()> { panic!("boom") },
            tx,
            true,
        )))
        .unwrap();
        let (tx, mut good) = oneshot::channel();
        send.send(Msg::Op(op(insert(7), tx, false))).unwrap();
        let (done, closed) = oneshot::channel();
        send.send(Msg::Close(done)).unwrap();
        closed.blocking_recv().unwrap();
        handle.join().unwrap();
        assert!(matches!(
            bad.try_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(good.try_recv().unwrap().unwrap(), 7);
    }

    #[test]
    fn a_read_only_database_fails_every_op() {
        // Whether BEGIN IMMEDIATE or each insert refuses, every caller gets an error.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        memory_db()
            .execute_batch(&format!("VACUUM INTO '{}'", path.display()))
            .unwrap();
        let mut conn =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for v in [1, 2] {
            let (tx, rx) = oneshot::channel();
            batch.push(op(insert(v), tx, true));
            answers.push(rx);
        }
        commit_batch(&mut conn, &mut batch);
        for mut rx in answers {
            assert!(rx.try_recv().unwrap().is_err());
        }
    }
}
