//! The audit trail in the store: CloudTrail events kept for a while, looked up newest first.
//!
//! The store does not render events: it keeps what the server hands it ([`AuditRecord`], the event
//! as data) and gives it back. Each appended batch is stored as one packed row per account
//! ([`pack`]: repeated strings written once), because one row per event cost more than the request
//! it recorded. [`Store::lookup_events`] reads an account's batches newest first, filters their
//! events and returns them one page at a time, in exact time order; [`Store::prune_events`]
//! deletes old batches.
//!
//! A page's `next_token` is sealed (XChaCha20-Poly1305 under a key derived from the master key)
//! with the account and the query's filters as associated data: it is opaque, and a token cannot be
//! forged, nor replayed for another account or another filter.

mod pack;

use std::time::SystemTime;

use crate::model::to_millis;
use crate::{Store, StoreError};

/// The [`crate::MasterKey::derive`] purpose of the key that seals LookupEvents page tokens.
pub const EVENT_TOKEN_PURPOSE: &str = "keyward/store/event-page-tokens/v1";

/// Largest page [`Store::lookup_events`] returns (CloudTrail's `MaxResults` bound).
pub const MAX_EVENTS_PER_PAGE: usize = 50;

/// Who made a call, as CloudTrail's `userIdentity.type` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IdentityType {
    /// Not authenticated (the key was unknown, or no key at all).
    Unknown = 0,
    /// The account's root credentials.
    Root = 1,
    /// An IAM user.
    IamUser = 2,
}

impl IdentityType {
    /// CloudTrail's name: `Unknown`, `Root`, `IAMUser`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityType::Unknown => "Unknown",
            IdentityType::Root => "Root",
            IdentityType::IamUser => "IAMUser",
        }
    }
}

/// One audit event: everything a CloudTrail event says, as data (the server renders the JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The account whose trail holds the event; `None` for a call that names no account (such
    /// events go to the log file only, never to the store).
    pub account_id: Option<String>,
    /// When the call was made (kept to the millisecond).
    pub time: SystemTime,
    /// CloudTrail's `eventID` (a UUID; keyward's carry their millisecond, see [`event_id_time`]).
    pub event_id: String,
    /// The operation, e.g. `CreateAccessKey`.
    pub event_name: String,
    /// E.g. `iam.amazonaws.com`.
    pub event_source: String,
    /// The credential scope's region.
    pub region: String,
    /// `userIdentity.type`.
    pub identity_type: IdentityType,
    /// `userIdentity.principalId`.
    pub principal_id: Option<String>,
    /// `userIdentity.arn`.
    pub arn: Option<String>,
    /// The access key the request was signed with, if any.
    pub access_key_id: Option<String>,
    /// The IAM user name (`None` for root and unknown callers).
    pub user_name: Option<String>,
    /// Signed with session (temporary) credentials.
    pub session: bool,
    /// True for calls that change nothing.
    pub read_only: bool,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The error code answered, if any.
    pub error_code: Option<String>,
    /// The error message answered, if any.
    pub error_message: Option<String>,
    /// `requestParameters` as a JSON object, secrets hidden.
    pub request_parameters: Option<String>,
    /// `responseElements` as JSON, secrets hidden.
    pub response_elements: Option<String>,
    /// The request id answered.
    pub request_id: String,
    /// For events stored by keyward before schema 3, the CloudTrail JSON exactly as then written
    /// (the fields above are then only the ones lookups filter on).
    pub stored_json: Option<String>,
}

/// An event to be stored, borrowed from wherever its parts live (see [`AuditRecord`] for what each
/// field means). Requests pack their event from this view without copying it into a record first.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// The trail's account (`None`: not stored).
    pub account_id: Option<&'a str>,
    /// When the call was made.
    pub time: SystemTime,
    /// CloudTrail's `eventID`.
    pub event_id: EventId<'a>,
    /// The operation.
    pub event_name: &'a str,
    /// E.g. `iam.amazonaws.com`.
    pub event_source: &'a str,
    /// The credential scope's region.
    pub region: &'a str,
    /// `userIdentity.type`.
    pub identity_type: IdentityType,
    /// `userIdentity.principalId`.
    pub principal_id: Option<&'a str>,
    /// `userIdentity.arn`.
    pub arn: Option<&'a str>,
    /// The access key the request was signed with.
    pub access_key_id: Option<&'a str>,
    /// The IAM user name.
    pub user_name: Option<&'a str>,
    /// Signed with session credentials.
    pub session: bool,
    /// True for calls that change nothing.
    pub read_only: bool,
    /// The client's address.
    pub source_ip: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The error code answered.
    pub error_code: Option<&'a str>,
    /// The error message answered.
    pub error_message: Option<&'a str>,
    /// `requestParameters` JSON.
    pub request_parameters: Option<&'a str>,
    /// `responseElements` JSON.
    pub response_elements: Option<&'a str>,
    /// The request id answered.
    pub request_id: EventId<'a>,
    /// JSON kept verbatim from schema 2.
    pub stored_json: Option<&'a str>,
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> AuditRecord {
        let own = |s: Option<&str>| s.map(str::to_owned);
        AuditRecord {
            account_id: own(self.account_id),
            time: self.time,
            event_id: self.event_id.to_string(),
            event_name: self.event_name.to_owned(),
            event_source: self.event_source.to_owned(),
            region: self.region.to_owned(),
            identity_type: self.identity_type,
            principal_id: own(self.principal_id),
            arn: own(self.arn),
            access_key_id: own(self.access_key_id),
            user_name: own(self.user_name),
            session: self.session,
            read_only: self.read_only,
            source_ip: own(self.source_ip),
            user_agent: own(self.user_agent),
            error_code: own(self.error_code),
            error_message: own(self.error_message),
            request_parameters: own(self.request_parameters),
            response_elements: own(self.response_elements),
            request_id: self.request_id.to_string(),
            stored_json: own(self.stored_json),
        }
    }
}

impl AuditRecord {
    /// The record as an [`EventRef`].
    pub fn as_event(&self) -> EventRef<'_> {
        EventRef {
            account_id: self.account_id.as_deref(),
            time: self.time,
            event_id: EventId::Text(&self.event_id),
            event_name: &self.event_name,
            event_source: &self.event_source,
            region: &self.region,
            identity_type: self.identity_type,
            principal_id: self.principal_id.as_deref(),
            arn: self.arn.as_deref(),
            access_key_id: self.access_key_id.as_deref(),
            user_name: self.user_name.as_deref(),
            session: self.session,
            read_only: self.read_only,
            source_ip: self.source_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            error_code: self.error_code.as_deref(),
            error_message: self.error_message.as_deref(),
            request_parameters: self.request_parameters.as_deref(),
            response_elements: self.response_elements.as_deref(),
            request_id: EventId::Text(&self.request_id),
            stored_json: self.stored_json.as_deref(),
        }
    }
}

/// The millisecond a keyward event id was made for: ids are UUIDs whose first 48 bits are the
/// event's Unix time in milliseconds (the layout of UUID version 7). `None` for any other id.
pub fn event_id_time(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[14] != b'7' {
        return None;
    }
    let hex: String = id[..8].chars().chain(id[9..13].chars()).collect();
    i64::from_str_radix(&hex, 16).ok()
}

/// A new event id for an event at `time` (a UUID version 7: time in milliseconds, then random),
/// held as its 16 bytes: an event id is made for every request, and is only packed (as bytes) or
/// shown (as text, when the event is written as JSON).
pub fn new_event_id(time: SystemTime) -> EventId<'static> {
    let ms = to_millis(time).max(0) as u64;
    let mut b = keyward_ids::unique_bytes();
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    EventId::Uuid(b)
}

/// An event's id as an [`EventRef`] holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventId<'a> {
    /// A UUID's 16 bytes (made by [`new_event_id`]); its text is the lowercase hyphenated form.
    Uuid([u8; 16]),
    /// An id as text (read back from the store, or any id not made by keyward).
    Text(&'a str),
}

impl EventId<'_> {
    /// Calls `f` with the id as text (a UUID written out on the stack).
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            EventId::Uuid(b) => f(UuidText::new(b).as_str()),
            EventId::Text(s) => f(s),
        }
    }
}

impl std::fmt::Display for EventId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

/// A UUID in its lowercase hyphenated form, held inline (36 bytes, no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UuidText([u8; 36]);

impl UuidText {
    /// The hyphenated form of 16 bytes.
    pub fn new(b: &[u8; 16]) -> UuidText {
        let mut t = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            t[at] = pack::HEX[usize::from(byte >> 4)];
            t[at + 1] = pack::HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        UuidText(t)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Hex digits and hyphens only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for UuidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for UuidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
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

/// Most events one stored batch holds (larger appends are split).
pub(crate) const MAX_EVENTS_PER_BATCH: usize = 4096;

/// Batches fetched per engine call while looking events up.
const BATCHES_PER_FETCH: usize = 8;

/// One account's share of an appended batch, packed ([`pack`]). The blob is shared: handing a
/// batch to an engine (and keeping it for another try) copies no event.
#[derive(Clone)]
pub(crate) struct PackedBatch {
    pub(crate) account_id: String,
    pub(crate) min_ms: i64,
    pub(crate) max_ms: i64,
    pub(crate) events: u32,
    pub(crate) data: std::sync::Arc<Vec<u8>>,
}

/// Which stored batches of an account a lookup reads next: those that may hold events in
/// `[start_ms, end_ms]` (`max_ms >= start_ms` and `min_ms <= end_ms`), in the order
/// `max_ms DESC, seq DESC`, strictly after `after` in that order, at most `limit`.
pub(crate) struct BatchQuery {
    pub(crate) account_id: String,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) after: Option<(i64, i64)>,
    pub(crate) limit: usize,
}

/// A stored batch as an engine reads it back.
pub(crate) struct BatchRow {
    pub(crate) seq: i64,
    pub(crate) max_ms: i64,
    pub(crate) data: Vec<u8>,
}

/// An event's place in the trail: time, then batch, then position in the batch. Lookups return
/// events in descending order of this key; page tokens hold the last one returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    time_ms: i64,
    seq: i64,
    index: u32,
}

/// A matching event waiting to be returned; ordered by place (a max-heap gives the newest).
struct Candidate {
    place: Place,
    record: AuditRecord,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.place == other.place
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.place.cmp(&other.place)
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

fn matches(f: Option<&EventFilter>, e: &AuditRecord) -> bool {
    match f {
        None => true,
        Some(EventFilter::AccessKeyId(v)) => e.access_key_id.as_deref() == Some(v),
        // CloudTrail shows the root's events under the user name `root` (LookupEvents'
        // documentation pages through `Username` = `root`), and finds them by it.
        Some(EventFilter::Username(v)) => {
            e.user_name.as_deref() == Some(v)
                || (v == "root" && e.user_name.is_none() && e.identity_type == IdentityType::Root)
        }
        Some(EventFilter::EventName(v)) => e.event_name == *v,
        Some(EventFilter::ReadOnly(v)) => e.read_only == *v,
        Some(EventFilter::EventId(v)) => e.event_id == *v,
        Some(EventFilter::EventSource(v)) => e.event_source == *v,
    }
}

impl Store {
    /// Stores a batch of events in one transaction, as one packed row per account (split every
    /// [`MAX_EVENTS_PER_BATCH`] events). Events without an account, or of accounts that do not
    /// exist (a made-up key id encodes any account), are skipped. Durable when it returns.
    pub async fn append_events(&self, events: &[AuditRecord]) -> Result<(), StoreError> {
        let mut batch = EventBatch::new();
        for (i, e) in events.iter().enumerate() {
            // Packing thousands of events takes a millisecond or more: let requests run meanwhile.
            if i % 256 == 255 {
                tokio::task::yield_now().await;
            }
            batch.push(&e.as_event());
        }
        self.append_batch(&mut batch).await
    }

    /// Stores the events of a batch packed beforehand, like [`Store::append_events`]. The batch
    /// keeps its events (a failed write can be tried again); its blobs are sealed, not copied.
    pub async fn append_batch(&self, batch: &mut EventBatch) -> Result<(), StoreError> {
        self.append_sealed(batch, true).await
    }

    /// [`Store::append_batch`] for events nobody waits for (read-only calls, failures): the
    /// commit does not wait for the disk. When it returns the events are written, so they survive
    /// the process being killed (they are in the operating system's cache, or PostgreSQL's WAL
    /// buffers), and readable; a power loss (for PostgreSQL, a crash of the database server) can
    /// lose the last ones until a later synced commit or a checkpoint. SQLite: that transaction
    /// runs with `synchronous=NORMAL`; PostgreSQL: with `synchronous_commit` off.
    pub async fn append_batch_unsynced(&self, batch: &mut EventBatch) -> Result<(), StoreError> {
        self.append_sealed(batch, false).await
    }

    async fn append_sealed(&self, batch: &mut EventBatch, synced: bool) -> Result<(), StoreError> {
        let batches = batch.sealed();
        if batches.is_empty() {
            return Ok(());
        }
        self.backend().append_event_batches(batches, synced).await
    }

    /// One page of the account's events that match the query, newest first (ties: the later
    /// stored first). `InvalidInput` with message `Invalid NextToken.` for a token that was not
    /// issued for this same query, and for a page size outside 1 to [`MAX_EVENTS_PER_PAGE`].
    ///
    /// Batches are read newest first; an event is returned once no unread batch can hold a newer
    /// one, so the order is exact even where batches of several servers overlap in time.
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
                let bytes: [u8; 20] = clear.as_slice().try_into().map_err(|_| bad_token())?;
                Some(Place {
                    time_ms: i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
                    seq: i64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
                    index: u32::from_be_bytes(bytes[16..].try_into().expect("4 bytes")),
                })
            }
        };
        let mut start_ms = q.start.map_or(i64::MIN, to_millis);
        let mut end_ms = q.end.map_or(i64::MAX, to_millis);
        if let Some(b) = before {
            end_ms = end_ms.min(b.time_ms);
        }
        // keyward's event ids carry their millisecond: only batches around it need reading.
        if let Some(EventFilter::EventId(id)) = &q.filter {
            if let Some(ms) = event_id_time(id) {
                start_ms = start_ms.max(ms);
                end_ms = end_ms.min(ms);
            }
        }
        let want = q.max_results + 1;
        let mut out: Vec<Candidate> = Vec::new();
        let mut waiting = std::collections::BinaryHeap::new();
        let mut after = None;
        let mut exhausted = start_ms > end_ms;
        while out.len() < want {
            let rows = if exhausted {
                Vec::new()
            } else {
                self.backend()
                    .event_batches(BatchQuery {
                        account_id: q.account_id.clone(),
                        start_ms,
                        end_ms,
                        after,
                        limit: BATCHES_PER_FETCH,
                    })
                    .await?
            };
            exhausted = rows.len() < BATCHES_PER_FETCH;
            for row in rows {
                // Decoding a full batch takes a millisecond or two: let other tasks run between
                // batches, so a lookup that reads the whole trail does not stall the server.
                tokio::task::yield_now().await;
                // Every unread batch holds only events at or before row.max_ms.
                release(&mut waiting, &mut out, want, Some(row.max_ms));
                if out.len() >= want {
                    break;
                }
                after = Some((row.max_ms, row.seq));
                for (i, record) in pack::unpack(&row.data, &q.account_id)?
                    .into_iter()
                    .enumerate()
                {
                    let place = Place {
                        time_ms: to_millis(record.time),
                        seq: row.seq,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                    };
                    if place.time_ms < start_ms
                        || place.time_ms > end_ms
                        || before.is_some_and(|b| place >= b)
                        || !matches(q.filter.as_ref(), &record)
                    {
                        continue;
                    }
                    waiting.push(Candidate { place, record });
                }
            }
            if exhausted {
                release(&mut waiting, &mut out, want, None);
                break;
            }
        }
        let next_token = if out.len() > q.max_results {
            out.truncate(q.max_results);
            out.last().map(|c| {
                let mut clear = [0u8; 20];
                clear[..8].copy_from_slice(&c.place.time_ms.to_be_bytes());
                clear[8..16].copy_from_slice(&c.place.seq.to_be_bytes());
                clear[16..].copy_from_slice(&c.place.index.to_be_bytes());
                hex::encode(self.inner.event_tokens.seal(&clear, &aad))
            })
        } else {
            None
        };
        Ok(EventPage {
            events: out.into_iter().map(|c| c.record).collect(),
            next_token,
        })
    }

    /// Deletes stored batches whose newest event is older than `before`, at most `limit` batches
    /// (the oldest first); returns how many events went with them. Call again while it returns
    /// more than zero. A batch spans the few milliseconds its events were collected in, so an
    /// event outlives the cut by at most that.
    pub async fn prune_events(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.backend()
            .prune_events(to_millis(before), limit.max(1))
            .await
    }
}

/// Events packed as they come, one blob per account (a new one every [`MAX_EVENTS_PER_BATCH`]
/// events), in the order pushed; stored by [`Store::append_batch`]. Packing copies what it keeps,
/// so an event can be pushed straight from the request that made it, without a record of its own.
///
/// A blob grows as events come. At thousands of events a second a batch holds hundreds of KiB, and
/// growing a fresh buffer to that size each time copies it over and over into memory the kernel
/// must first fault in: [`EventBatch::into_buffers`] gives the blobs' buffers back once stored,
/// for [`EventBatch::with_buffers`] to start a later batch with.
#[derive(Clone, Default)]
pub struct EventBatch {
    open: Vec<(String, pack::Packer)>,
    done: Vec<PackedBatch>,
    events: usize,
    /// Buffers for the next blobs begun.
    spare: Vec<Vec<u8>>,
}

/// Largest buffer [`EventBatch::into_buffers`] gives back (a burst's is let go).
const SPARE_MAX: usize = 8 << 20;
/// Most buffers [`EventBatch::into_buffers`] gives back (the largest).
const SPARE_COUNT: usize = 4;

impl std::fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatch")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch whose blobs are packed into `buffers` first (their contents are dropped,
    /// their capacity kept); see [`EventBatch::into_buffers`].
    pub fn with_buffers(buffers: Vec<Vec<u8>>) -> Self {
        EventBatch {
            spare: buffers,
            ..Self::default()
        }
    }

    /// The buffers of this batch's blobs, for [`EventBatch::with_buffers`]: those nothing else
    /// holds any more (the batch was stored), at most four, the largest, none over 8 MiB.
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        let mut buffers: Vec<Vec<u8>> = self
            .done
            .into_iter()
            .filter_map(|b| std::sync::Arc::try_unwrap(b.data).ok())
            .chain(self.open.into_iter().map(|(_, p)| p.finish().0))
            .chain(self.spare)
            .filter(|b| b.capacity() > 0 && b.capacity() <= SPARE_MAX)
            .collect();
        buffers.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        buffers.truncate(SPARE_COUNT);
        buffers
    }

    /// Adds an event; one without an account is left out (returns false).
    pub fn push(&mut self, e: &EventRef<'_>) -> bool {
        let Some(account) = e.account_id else {
            return false;
        };
        let i = match self.open.iter().position(|(a, _)| a == account) {
            Some(i) => i,
            None => {
                let buffer = self.spare.pop().unwrap_or_default();
                self.open
                    .push((account.to_owned(), pack::Packer::with_buffer(buffer)));
                self.open.len() - 1
            }
        };
        let packer = &mut self.open[i].1;
        packer.push(e);
        self.events += 1;
        if packer.len() >= MAX_EVENTS_PER_BATCH {
            let (account, full) = self.open.swap_remove(i);
            self.done.push(packed(account, full));
        }
        true
    }

    /// Events pushed (and kept).
    pub fn len(&self) -> usize {
        self.events
    }

    /// True when no event was kept.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The blobs to store (shared with the batch): the open ones are finished first, so events
    /// pushed later start new blobs.
    pub(crate) fn sealed(&mut self) -> Vec<PackedBatch> {
        for (account, p) in self.open.drain(..) {
            self.done.push(packed(account, p));
        }
        self.done.clone()
    }

    pub(crate) fn finish(self) -> Vec<PackedBatch> {
        let mut done = self.done;
        for (account, p) in self.open {
            done.push(packed(account, p));
        }
        done
    }
}

fn packed(account_id: String, p: pack::Packer) -> PackedBatch {
    let (data, min_ms, max_ms, events) = p.finish();
    PackedBatch {
        account_id,
        min_ms,
        max_ms,
        events,
        data: std::sync::Arc::new(data),
    }
}

/// [`EventBatch`] over a whole slice.
pub(crate) fn pack_batches(events: &[AuditRecord]) -> Vec<PackedBatch> {
    let mut b = EventBatch::new();
    for e in events {
        b.push(&e.as_event());
    }
    b.finish()
}

/// An event as schema 2 stored it (one row, the CloudTrail JSON in `body`): the migration to
/// schema 3 reads these and packs them with [`legacy_record`].
pub(crate) struct LegacyEvent {
    pub(crate) account_id: String,
    pub(crate) time_ms: i64,
    pub(crate) event_id: String,
    pub(crate) event_name: String,
    pub(crate) event_source: String,
    pub(crate) access_key_id: Option<String>,
    pub(crate) user_name: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) body: String,
}

/// The schema-3 record of a schema-2 event: its JSON kept as written, the filtered fields copied.
pub(crate) fn legacy_record(e: LegacyEvent) -> AuditRecord {
    AuditRecord {
        account_id: Some(e.account_id),
        time: crate::model::from_millis(e.time_ms),
        event_id: e.event_id,
        event_name: e.event_name,
        event_source: e.event_source,
        region: String::new(),
        identity_type: IdentityType::Unknown,
        principal_id: None,
        arn: None,
        access_key_id: e.access_key_id,
        user_name: e.user_name,
        session: false,
        read_only: e.read_only,
        source_ip: None,
        user_agent: None,
        error_code: None,
        error_message: None,
        request_parameters: None,
        response_elements: None,
        request_id: String::new(),
        stored_json: Some(e.body),
    }
}

/// Moves waiting events newer than `bound` (all of them for `None`) to `out`, newest first, until
/// `out` has `want`.
fn release(
    waiting: &mut std::collections::BinaryHeap<Candidate>,
    out: &mut Vec<Candidate>,
    want: usize,
    bound: Option<i64>,
) {
    while out.len() < want {
        let ready = match (waiting.peek(), bound) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(c), Some(b)) => c.place.time_ms > b,
        };
        if !ready {
            break;
        }
        out.extend(waiting.pop());
    }
}
