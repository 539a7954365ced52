//! Writes whose commit waits for their request's audit event.
//!
//! A request that changes something is answered only once its audit event is durable. Stored on
//! their own, the write and its event cost two commits in a row (two WAL flushes on PostgreSQL),
//! and the event's is a transaction of its own. Instead, a request handled inside
//! [`holding_commits`] gets its access-key writes back before they commit: the batch's
//! transaction stays open while the caller builds its answer and its event, the caller puts the
//! event into the transaction ([`HeldCommit::put`]) and lets it commit ([`HeldCommit::commit`]),
//! and answers once the commit (write and event together) is done. If the commit fails, both are
//! rolled back and the caller answers with the error.
//!
//! Only the PostgreSQL backend holds writes (its batched CreateAccessKey and DeleteAccessKey); on
//! other stores, and outside [`holding_commits`], writes commit before they return, as before.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::events::{EventBatch, EventRef};
use crate::StoreError;

tokio::task_local! {
    static HOLDS: Arc<Mutex<Vec<HeldCommit>>>;
}

/// Runs `f` (a request's handling); writes it makes that the store can hold stay uncommitted
/// until their [`HeldCommit::commit`], and are returned with `f`'s output. Every returned
/// [`HeldCommit`] must be committed before the request is answered (dropped, it commits without
/// waiting and without an event).
pub async fn holding_commits<F: Future>(f: F) -> (F::Output, Vec<HeldCommit>) {
    let holds = Arc::new(Mutex::new(Vec::new()));
    let out = HOLDS.scope(Arc::clone(&holds), f).await;
    let held = std::mem::take(&mut *holds.lock().unwrap_or_else(|e| e.into_inner()));
    (out, held)
}

/// Whether the current task runs inside [`holding_commits`].
pub(crate) fn holding() -> bool {
    HOLDS.try_with(|_| ()).is_ok()
}

/// Commits the writes the current task holds already, before it writes again: one batch runs at
/// a time, and the next one cannot start while this task's stays open. Their events then go the
/// usual way ([`HeldCommit::put`] answers `false`).
pub(crate) async fn release_held() -> Result<(), StoreError> {
    let holds = HOLDS
        .try_with(|h| std::mem::take(&mut *h.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default();
    let mut outcome = Ok(());
    for h in holds {
        if let Err(e) = h.commit().await {
            outcome = Err(e);
        }
    }
    outcome
}

/// Hands a held write to the request running inside [`holding_commits`]; outside one, `h` is
/// dropped (the write then commits at once).
pub(crate) fn hand_over(h: HeldCommit) {
    let _ = HOLDS.try_with(|holds| holds.lock().unwrap_or_else(|e| e.into_inner()).push(h));
}

/// The events of one held batch: `None` once the batch has taken them into its transaction.
pub(crate) type HeldEvents = Arc<Mutex<Option<EventBatch>>>;

/// A write done in an open transaction, waiting for its request's audit event.
#[derive(Debug)]
pub struct HeldCommit {
    events: HeldEvents,
    /// Dropped (or sent) when the request has put its event: the batch may commit.
    ready: Option<oneshot::Sender<()>>,
    /// The commit's outcome.
    outcome: oneshot::Receiver<Result<(), StoreError>>,
}

/// The batch's side of a [`HeldCommit`].
pub(crate) struct Holder {
    /// Resolves when the request has put its event (or gave up on it).
    pub(crate) ready: oneshot::Receiver<()>,
    /// Where the commit's outcome goes.
    pub(crate) outcome: oneshot::Sender<Result<(), StoreError>>,
}

/// A held write and the batch's side of it, sharing the batch's `events`.
pub(crate) fn held(events: &HeldEvents) -> (HeldCommit, Holder) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (outcome_tx, outcome_rx) = oneshot::channel();
    (
        HeldCommit {
            events: Arc::clone(events),
            ready: Some(ready_tx),
            outcome: outcome_rx,
        },
        Holder {
            ready: ready_rx,
            outcome: outcome_tx,
        },
    )
}

impl HeldCommit {
    /// Puts the request's audit event into the write's transaction. `false` when the batch no
    /// longer waits for it (it committed without: store the event the usual way).
    pub fn put(&self, e: &EventRef<'_>) -> bool {
        match &mut *self.events.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(batch) => {
                batch.push(e);
                true
            }
            None => false,
        }
    }

    /// Lets the write commit (with the events put) and waits for the outcome: `Ok` once the write
    /// and its event are durable; an error if the transaction failed (then neither was stored,
    /// unless the connection broke during the commit, when the outcome is unknown).
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if let Some(r) = self.ready.take() {
            let _ = r.send(());
        }
        (&mut self.outcome).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the access-key writer stopped before committing".into(),
            ))
        })
    }
}
