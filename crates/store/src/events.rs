//! The audit trail in the store: CloudTrail events kept for a while, looked up newest first.
//!
//! The store does not build events: it keeps what the server hands it ([`AuditRecord`]: the event's
//! JSON plus the few fields LookupEvents filters on) in one transaction per batch, answers
//! [`Store::lookup_events`] one page at a time, and deletes old events ([`Store::prune_events`]).
//!
//! A page's `next_token` is sealed (XChaCha20-Poly1305 under a key derived from the master key)
//! with the account and the query's filters as associated data: it is opaque, and a token cannot be
//! forged, nor replayed for another account or another filter.

use std::time::SystemTime;

use crate::model::{from_millis, to_millis};
use crate::{Store, StoreError};

/// The [`crate::MasterKey::derive`] purpose of the key that seals LookupEvents page tokens.
pub const EVENT_TOKEN_PURPOSE: &str = "keyward/store/event-page-tokens/v1";

/// Largest page [`Store::lookup_events`] returns (CloudTrail's `MaxResults` bound).
pub const MAX_EVENTS_PER_PAGE: usize = 50;

/// One audit event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The account whose trail holds the event.
    pub account_id: String,
    /// When the call was made (kept to the millisecond).
    pub time: SystemTime,
    /// CloudTrail's `eventID` (a UUID).
    pub event_id: String,
    /// The operation, e.g. `CreateAccessKey`.
    pub event_name: String,
    /// E.g. `iam.amazonaws.com`.
    pub event_source: String,
    /// The access key the request was signed with, if any.
    pub access_key_id: Option<String>,
    /// The IAM user name (`None` for root and unknown callers).
    pub user_name: Option<String>,
    /// True for calls that change nothing.
    pub read_only: bool,
    /// The CloudTrail event JSON.
    pub body: String,
}

/// The one attribute a lookup may filter on (CloudTrail's `LookupAttributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// Events signed with this access key id.
    AccessKeyId(String),
    /// Events of this IAM user (exact name).
    Username(String),
    /// Events of this operation.
    EventName(String),
    /// Read-only (`true`) or mutating (`false`) events.
    ReadOnly(bool),
    /// The event with this id.
    EventId(String),
    /// Events of this service, e.g. `iam.amazonaws.com`.
    EventSource(String),
}

impl EventFilter {
    /// The filter as bound into page tokens.
    fn describe(&self) -> String {
        match self {
            EventFilter::AccessKeyId(v) => format!("AccessKeyId={v}"),
            EventFilter::Username(v) => format!("Username={v}"),
            EventFilter::EventName(v) => format!("EventName={v}"),
            EventFilter::ReadOnly(v) => format!("ReadOnly={v}"),
            EventFilter::EventId(v) => format!("EventId={v}"),
            EventFilter::EventSource(v) => format!("EventSource={v}"),
        }
    }
}

/// One LookupEvents question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    /// The account whose trail is read.
    pub account_id: String,
    /// At most one attribute filter.
    pub filter: Option<EventFilter>,
    /// Events at or after this time.
    pub start: Option<SystemTime>,
    /// Events at or before this time.
    pub end: Option<SystemTime>,
    /// Page size, 1 to [`MAX_EVENTS_PER_PAGE`].
    pub max_results: usize,
    /// A previous page's `next_token` for the same query.
    pub next_token: Option<String>,
}

/// One page of events, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPage {
    /// The events.
    pub events: Vec<AuditRecord>,
    /// Set when more events follow: pass it back in [`EventQuery::next_token`].
    pub next_token: Option<String>,
}

/// What an engine filters on, its time bounds in milliseconds, and where the previous page ended.
pub(crate) struct EngineQuery {
    pub(crate) account_id: String,
    pub(crate) filter: Option<EventFilter>,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    /// Strictly older than `(time_ms, seq)`, in the order `time_ms DESC, seq DESC`.
    pub(crate) before: Option<(i64, i64)>,
    pub(crate) limit: usize,
}

/// A stored event with its insertion number, the tie-break of equal times.
pub(crate) struct EventRow {
    pub(crate) seq: i64,
    pub(crate) record: AuditRecord,
}

impl EventRow {
    /// Builds a row from column values as both engines read them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        seq: i64,
        account_id: String,
        time_ms: i64,
        event_id: String,
        event_name: String,
        event_source: String,
        access_key_id: Option<String>,
        user_name: Option<String>,
        read_only: bool,
        body: String,
    ) -> EventRow {
        EventRow {
            seq,
            record: AuditRecord {
                account_id,
                time: from_millis(time_ms),
                event_id,
                event_name,
                event_source,
                access_key_id,
                user_name,
                read_only,
                body,
            },
        }
    }
}

/// The error for a token that is not one of ours for this query.
fn bad_token() -> StoreError {
    StoreError::InvalidInput("Invalid NextToken.".into())
}

fn token_aad(q: &EventQuery) -> Vec<u8> {
    let filter = q.filter.as_ref().map(EventFilter::describe);
    format!(
        "{}\n{}\n{:?}\n{:?}",
        q.account_id,
        filter.unwrap_or_default(),
        q.start.map(to_millis),
        q.end.map(to_millis)
    )
    .into_bytes()
}

impl Store {
    /// Stores a batch of events in one transaction. Events of accounts that do not exist (a
    /// made-up key id encodes any account) are skipped. Durable when it returns.
    pub async fn append_events(&self, events: Vec<AuditRecord>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.backend().append_events(events).await
    }

    /// One page of the account's events that match the query, newest first (ties: the later
    /// stored first). `InvalidInput` with message `Invalid NextToken.` for a token that was not
    /// issued for this same query, and for a page size outside 1 to [`MAX_EVENTS_PER_PAGE`].
    pub async fn lookup_events(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        if !(1..=MAX_EVENTS_PER_PAGE).contains(&q.max_results) {
            return Err(StoreError::InvalidInput(format!(
                "MaxResults must be between 1 and {MAX_EVENTS_PER_PAGE}"
            )));
        }
        let aad = token_aad(q);
        let before = match &q.next_token {
            None => None,
            Some(t) => {
                let sealed = hex::decode(t).map_err(|_| bad_token())?;
                let clear = self
                    .inner
                    .event_tokens
                    .open(&sealed, &aad)
                    .map_err(|_| bad_token())?;
                let bytes: [u8; 16] = clear.as_slice().try_into().map_err(|_| bad_token())?;
                let time_ms = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                let seq = i64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
                Some((time_ms, seq))
            }
        };
        let eq = EngineQuery {
            account_id: q.account_id.clone(),
            filter: q.filter.clone(),
            start_ms: q.start.map_or(i64::MIN, to_millis),
            end_ms: q.end.map_or(i64::MAX, to_millis),
            before,
            limit: q.max_results + 1,
        };
        let mut rows = self.backend().lookup_events(eq).await?;
        let next_token = if rows.len() > q.max_results {
            rows.truncate(q.max_results);
            rows.last().map(|r| {
                let mut clear = [0u8; 16];
                clear[..8].copy_from_slice(&to_millis(r.record.time).to_be_bytes());
                clear[8..].copy_from_slice(&r.seq.to_be_bytes());
                hex::encode(self.inner.event_tokens.seal(&clear, &aad))
            })
        } else {
            None
        };
        Ok(EventPage {
            events: rows.into_iter().map(|r| r.record).collect(),
            next_token,
        })
    }

    /// Deletes up to `limit` events older than `before` (the oldest first); returns how many
    /// were deleted. Call again while it returns `limit`.
    pub async fn prune_events(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.backend()
            .prune_events(to_millis(before), limit.max(1))
            .await
    }
}

/// A filter's value as engines bind it.
pub(crate) enum FilterValue {
    Text(String),
    Bool(bool),
}

/// The column a filter compares (a fixed name, never user input) and the value.
pub(crate) fn filter_column(f: &EventFilter) -> (&'static str, FilterValue) {
    match f {
        EventFilter::AccessKeyId(v) => ("access_key_id", FilterValue::Text(v.clone())),
        EventFilter::Username(v) => ("user_name", FilterValue::Text(v.clone())),
        EventFilter::EventName(v) => ("event_name", FilterValue::Text(v.clone())),
        EventFilter::EventId(v) => ("event_id", FilterValue::Text(v.clone())),
        EventFilter::EventSource(v) => ("event_source", FilterValue::Text(v.clone())),
        EventFilter::ReadOnly(v) => ("read_only", FilterValue::Bool(*v)),
    }
}
