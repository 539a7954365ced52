//! The audit trail: one CloudTrail event per API call and per authentication failure, written by
//! one writer task to a hash-chained JSON-lines file (`--audit-log`) and to the store (for
//! `LookupEvents`), in batches (group commit).
//!
//! Requests hand their event to a bounded channel. A request whose action changed state waits
//! until the batch holding its event is durable (file fsynced and store transaction committed)
//! before its answer is sent; read-only calls and failures only wait for room in the channel. When
//! the channel is full every request waits (backpressure): nothing is dropped while the writer
//! runs. See docs/audit.md.

pub mod chain;
mod elements;

use crate::caller::{Caller, Identity};
use keyward_protocol::time::iso8601;
use keyward_store::{new_event_id, AuditRecord, IdentityType, Store};
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, Notify};

pub(crate) use elements::camel;

/// CloudTrail's event format version.
pub const EVENT_VERSION: &str = "1.08";
/// Default days events stay in the store (CloudTrail's LookupEvents window).
pub const DEFAULT_RETENTION_DAYS: u64 = 90;
/// Default capacity of the channel between requests and the writer.
pub const DEFAULT_QUEUE: usize = 16 * 1024;
/// Most events in one batch.
const MAX_BATCH: usize = 4096;
/// How long the writer keeps collecting a batch of events nobody waits for (read-only calls,
/// failures) before writing it: one transaction and one fsync per ~50 ms instead of per handful of
/// events. An event a request waits for (a change) or a shutdown ends the wait at once.
const LINGER: Duration = Duration::from_millis(50);
/// Most events deleted per pruning transaction.
const PRUNE_BATCH: usize = 10_000;
/// Time between pruning rounds.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The value CloudTrail shows in place of a secret request parameter.
const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Where the audit log file goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditLog {
    /// Standard output (`--audit-log -`), flushed per batch.
    Stdout,
    /// A file, created with mode 0600, appended to, fsynced per batch.
    File(PathBuf),
}

/// Settings of the audit trail.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The JSON-lines log, if any.
    pub log: Option<AuditLog>,
    /// How long events stay in the store; zero keeps none there (and LookupEvents finds nothing).
    pub retention: Duration,
    /// Capacity of the channel to the writer.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            log: None,
            retention: Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400),
            queue: DEFAULT_QUEUE,
        }
    }
}

impl AuditConfig {
    /// True when events go nowhere: no log and no retention.
    pub fn is_off(&self) -> bool {
        self.log.is_none() && self.retention.is_zero()
    }
}

/// Who made a call, as far as the request shows.
#[derive(Clone, Debug)]
pub enum Principal {
    /// Authenticated.
    Caller(Caller),
    /// Authentication failed with this access key id (known or not); the trail owner is the
    /// account the key id encodes.
    Key(String),
    /// No access key at all.
    Anonymous,
}

/// One call, as the request path knows it; the writer turns it into CloudTrail JSON.
#[derive(Debug)]
pub struct AuditEvent {
    /// When the call was made (the same instant as the key's last use).
    pub time: SystemTime,
    /// Signing service: `iam`, `sts`, `s3`, `cloudtrail`.
    pub service: String,
    /// The operation.
    pub event_name: String,
    /// The credential scope's region.
    pub region: String,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The caller.
    pub principal: Principal,
    /// Request parameters (secrets already hidden), `None` for none.
    pub request_parameters: Option<Value>,
    /// The XML answer of a successful mutating call, for `responseElements`.
    pub response_xml: Option<String>,
    /// Error code and message answered, if any.
    pub error: Option<(String, String)>,
    /// The request id answered.
    pub request_id: String,
    /// True for calls that change nothing.
    pub read_only: bool,
}

/// True for operations that change nothing (CloudTrail's `readOnly`); issuing credentials counts
/// as a change.
pub fn is_read_only(event_name: &str) -> bool {
    if matches!(event_name, "GetSessionToken" | "GetFederationToken") {
        return false;
    }
    ["Get", "List", "Describe", "Lookup", "Head"]
        .iter()
        .any(|p| event_name.starts_with(p))
}

/// Query parameters as CloudTrail's `requestParameters`: camelCase names, without `Action` and
/// `Version`, secrets hidden; `None` when nothing is left.
pub fn request_parameters<'a>(params: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Value> {
    let mut map = Map::new();
    for (k, v) in params {
        if k == "Action" || k == "Version" {
            continue;
        }
        let lower = k.to_ascii_lowercase();
        let secret = ["password", "secret", "token"]
            .iter()
            .any(|s| lower.contains(s));
        let v = if secret { HIDDEN } else { v };
        map.insert(camel(k), Value::String(v.to_owned()));
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

impl AuditEvent {
    /// The event as the store keeps it and the log renders it: a new event id for its time, the
    /// identity spelled out, `responseElements` taken from the XML answer with secrets removed.
    /// Strings are moved, not copied.
    pub fn into_record(self) -> AuditRecord {
        let (identity_type, principal_id, arn, account_id, access_key_id, user_name, session) =
            match self.principal {
                Principal::Caller(c) => {
                    let kind = match c.identity {
                        Identity::Root => IdentityType::Root,
                        Identity::User { .. } => IdentityType::IamUser,
                    };
                    let principal = c.user_id().to_owned();
                    let arn = c.arn();
                    let session = c.is_session();
                    let Caller {
                        account_id,
                        identity,
                        access_key_id,
                        ..
                    } = c;
                    let user = match identity {
                        Identity::Root => None,
                        Identity::User { name, .. } => Some(name),
                    };
                    (
                        kind,
                        Some(principal),
                        Some(arn),
                        Some(account_id),
                        Some(access_key_id),
                        user,
                        session,
                    )
                }
                Principal::Key(key) => (
                    IdentityType::Unknown,
                    None,
                    None,
                    keyward_ids::account_of_key_id(&key),
                    Some(key),
                    None,
                    false,
                ),
                Principal::Anonymous => {
                    (IdentityType::Unknown, None, None, None, None, None, false)
                }
            };
        let (error_code, error_message) = match self.error {
            Some((c, m)) => (Some(c), Some(m)),
            None => (None, None),
        };
        let mut event_source = self.service;
        event_source.push_str(".amazonaws.com");
        AuditRecord {
            account_id,
            time: self.time,
            event_id: new_event_id(self.time),
            event_name: self.event_name,
            event_source,
            region: self.region,
            identity_type,
            principal_id,
            arn,
            access_key_id,
            user_name,
            session,
            read_only: self.read_only,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            error_code,
            error_message,
            request_parameters: self.request_parameters.map(|v| v.to_string()),
            response_elements: self
                .response_xml
                .as_deref()
                .and_then(elements::response_elements)
                .map(|v| v.to_string()),
            request_id: self.request_id,
            stored_json: None,
        }
    }
}

/// The CloudTrail event JSON (one line, CloudTrail's field order) of a record; an event stored
/// before schema 3 comes back exactly as it was written then.
pub fn cloudtrail_json(r: &AuditRecord) -> String {
    if let Some(json) = &r.stored_json {
        return json.clone();
    }
    let mut o = String::with_capacity(768);
    o.push_str("{\"eventVersion\":\"");
    o.push_str(EVENT_VERSION);
    o.push_str("\",\"userIdentity\":{\"type\":\"");
    o.push_str(r.identity_type.as_str());
    o.push('"');
    field(&mut o, "principalId", r.principal_id.as_deref());
    field(&mut o, "arn", r.arn.as_deref());
    field(&mut o, "accountId", r.account_id.as_deref());
    field(&mut o, "accessKeyId", r.access_key_id.as_deref());
    field(&mut o, "userName", r.user_name.as_deref());
    if r.session {
        o.push_str(",\"sessionContext\":{\"attributes\":{\"mfaAuthenticated\":\"false\"}}");
    }
    o.push_str("},\"eventTime\":\"");
    o.push_str(&iso8601(r.time));
    o.push('"');
    field(&mut o, "eventSource", Some(&r.event_source));
    field(&mut o, "eventName", Some(&r.event_name));
    field(&mut o, "awsRegion", Some(&r.region));
    nullable(&mut o, "sourceIPAddress", r.source_ip.as_deref());
    nullable(&mut o, "userAgent", r.user_agent.as_deref());
    field(&mut o, "errorCode", r.error_code.as_deref());
    field(&mut o, "errorMessage", r.error_message.as_deref());
    o.push_str(",\"requestParameters\":");
    o.push_str(r.request_parameters.as_deref().unwrap_or("null"));
    o.push_str(",\"responseElements\":");
    o.push_str(r.response_elements.as_deref().unwrap_or("null"));
    field(&mut o, "requestID", Some(&r.request_id));
    field(&mut o, "eventID", Some(&r.event_id));
    o.push_str(if r.read_only {
        ",\"readOnly\":true"
    } else {
        ",\"readOnly\":false"
    });
    o.push_str(",\"eventType\":\"AwsApiCall\",\"managementEvent\":true");
    nullable(&mut o, "recipientAccountId", r.account_id.as_deref());
    o.push_str(",\"eventCategory\":\"Management\"}");
    o
}

/// `,"name":"value"`, or nothing for `None`.
fn field(o: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        o.push_str(",\"");
        o.push_str(name);
        o.push_str("\":");
        json_string(o, v);
    }
}

/// `,"name":"value"`, or `,"name":null` for `None`.
fn nullable(o: &mut String, name: &str, value: Option<&str>) {
    match value {
        Some(_) => field(o, name, value),
        None => {
            o.push_str(",\"");
            o.push_str(name);
            o.push_str("\":null");
        }
    }
}

/// A JSON string literal (RFC 8259 escaping).
fn json_string(o: &mut String, s: &str) {
    o.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        o.push_str(&s[start..i]);
        if esc.is_empty() {
            o.push_str(&format!("\\u{b:04x}"));
        } else {
            o.push_str(esc);
        }
        start = i + 1;
    }
    o.push_str(&s[start..]);
    o.push('"');
}

/// Counters of the writer.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events written.
    pub events: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Events lost because the writer had stopped (only after shutdown began).
    pub dropped: AtomicU64,
    /// Batches whose file or store write failed (logged; the store write is retried first).
    pub failures: AtomicU64,
}

impl AuditStats {
    /// The counters in Prometheus text exposition, appended to `/_keyward/metrics`.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP keyward_audit_events_total Audit events written.\n# TYPE keyward_audit_events_total counter\nkeyward_audit_events_total {}\n\
             # HELP keyward_audit_batches_total Audit batches written (one fsync and one transaction each).\n# TYPE keyward_audit_batches_total counter\nkeyward_audit_batches_total {}\n\
             # HELP keyward_audit_dropped_total Audit events lost because the writer had stopped.\n# TYPE keyward_audit_dropped_total counter\nkeyward_audit_dropped_total {}\n\
             # HELP keyward_audit_failures_total Audit batches whose file or store write failed.\n# TYPE keyward_audit_failures_total counter\nkeyward_audit_failures_total {}\n",
            g(&self.events),
            g(&self.batches),
            g(&self.dropped),
            g(&self.failures)
        )
    }
}

enum Msg {
    /// An event: its JSON line when a log is written and its record when the store keeps it, both
    /// made by the request so the writer's batches do not hold the runtime for milliseconds.
    Event(
        Option<String>,
        Option<Box<AuditRecord>>,
        Option<oneshot::Sender<()>>,
    ),
    Close(oneshot::Sender<()>),
}

/// The handle requests use to record events.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    /// Ends the writer's linger early (an event someone waits for, a shutdown, a filling channel).
    wake: Arc<Notify>,
    stats: Arc<AuditStats>,
    /// A log file is written: events are rendered as JSON.
    log: bool,
    /// Events are kept in the store.
    keep: bool,
}

enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Auditor {
    /// Opens the log (continuing its chain; a last line cut short by a crash is removed) and
    /// starts the writer and the pruning of expired events. Must be called within a tokio runtime.
    pub fn start(config: AuditConfig, store: Store) -> Result<Auditor, String> {
        let (sink, head) = match &config.log {
            None => (None, chain::ChainHead::default()),
            Some(AuditLog::Stdout) => (Some(Sink::Stdout), chain::ChainHead::default()),
            Some(AuditLog::File(path)) => {
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("cannot open audit log {}: {e}", path.display()))?;
                let (head, complete) = chain::read_head(&mut f)
                    .map_err(|e| format!("cannot continue audit log {}: {e}", path.display()))?;
                let len = f.metadata().map_err(|e| e.to_string())?.len();
                if complete < len {
                    tracing::warn!(
                        path = %path.display(),
                        bytes = len - complete,
                        "audit log ended with an incomplete line (a write cut short); removing it"
                    );
                    f.set_len(complete).map_err(|e| e.to_string())?;
                }
                (Some(Sink::File(f)), head)
            }
        };
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(AuditStats::default());
        let keep = !config.retention.is_zero();
        let wake = Arc::new(Notify::new());
        tokio::spawn(writer(
            rx,
            Arc::clone(&wake),
            sink,
            head,
            keep.then(|| store.clone()),
            Arc::clone(&stats),
        ));
        if keep {
            tokio::spawn(pruner(store, config.retention));
        }
        Ok(Auditor {
            tx,
            wake,
            stats,
            log: config.log.is_some(),
            keep,
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Records an event; with `durable`, returns once it is written (file fsynced, store
    /// committed). Waits while the channel is full.
    pub async fn record(&self, event: AuditEvent, durable: bool) {
        let (ack, done) = if durable {
            let (a, d) = oneshot::channel();
            (Some(a), Some(d))
        } else {
            (None, None)
        };
        let sent = self
            .tx
            .send({
                let record = event.into_record();
                let json = self.log.then(|| cloudtrail_json(&record));
                let record = (self.keep && record.account_id.is_some()).then(|| Box::new(record));
                Msg::Event(json, record, ack)
            })
            .await;
        if sent.is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if durable || self.tx.capacity() < self.tx.max_capacity() / 2 {
            self.wake.notify_one();
        }
        if let Some(d) = done {
            let _ = d.await;
        }
    }

    /// Writes every event sent so far, then stops the writer.
    pub async fn close(&self) {
        let (a, d) = oneshot::channel();
        if self.tx.send(Msg::Close(a)).await.is_ok() {
            self.wake.notify_one();
            let _ = d.await;
        }
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Msg>,
    wake: Arc<Notify>,
    sink: Option<Sink>,
    mut head: chain::ChainHead,
    store: Option<Store>,
    stats: Arc<AuditStats>,
) {
    let sink = sink.map(|s| Arc::new(Mutex::new(s)));
    let mut batch = Vec::new();
    let urgent = |m: &Msg| matches!(m, Msg::Event(_, _, Some(_)) | Msg::Close(_));
    loop {
        let Some(first) = rx.recv().await else { return };
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut now = urgent(&first);
        batch.push(first);
        let mut drain = |batch: &mut Vec<Msg>, now: &mut bool| {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        *now |= urgent(&m);
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch, &mut now);
        if !now && batch.len() < MAX_BATCH {
            // Sleep through the linger instead of waking for every event sent meanwhile (that
            // was a task wake-up per request); a request that waits for its event, a shutdown or
            // a half-full channel wakes the writer early.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = wake.notified() => {}
            }
            drain(&mut batch, &mut now);
        }
        let mut text = String::new();
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let mut closing = Vec::new();
        for m in batch.drain(..) {
            match m {
                Msg::Event(json, record, ack) => {
                    if let (Some(_), Some(json)) = (&sink, json) {
                        text.push_str(&head.link(&json));
                    }
                    records.extend(record.map(|r| *r));
                    acks.extend(ack);
                    stats.events.fetch_add(1, Ordering::Relaxed);
                }
                Msg::Close(a) => closing.push(a),
            }
        }
        let file_write = async {
            let Some(sink) = sink.clone() else {
                return Ok(());
            };
            if text.is_empty() {
                return Ok(());
            }
            let text = std::mem::take(&mut text);
            tokio::task::spawn_blocking(move || {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                match &mut *s {
                    Sink::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(text.as_bytes()).and_then(|()| out.flush())
                    }
                    Sink::File(f) => f.write_all(text.as_bytes()).and_then(|()| f.sync_data()),
                }
            })
            .await
            .map_err(std::io::Error::other)?
        };
        let store_write = async {
            let Some(store) = &store else { return Ok(()) };
            if records.is_empty() {
                return Ok(());
            }
            let mut delay = Duration::from_millis(50);
            loop {
                match store.append_events(&records).await {
                    Ok(()) => return Ok(()),
                    Err(e) if delay > Duration::from_secs(2) => return Err(e),
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        };
        let (f, s) = tokio::join!(file_write, store_write);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = f {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "audit log write failed");
        }
        if let Err(e) = s {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "storing audit events failed");
        }
        for a in acks {
            let _ = a.send(());
        }
        // Freeing thousands of records takes a while too: in slices, letting requests run between.
        while records.len() > 256 {
            records.truncate(records.len() - 256);
            tokio::task::yield_now().await;
        }
        if !closing.is_empty() {
            for c in closing {
                let _ = c.send(());
            }
            return;
        }
    }
}

/// Deletes expired events now and every [`PRUNE_EVERY`], in batches.
async fn pruner(store: Store, retention: Duration) {
    loop {
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        loop {
            match store.prune_events(cutoff, PRUNE_BATCH).await {
                // More may be left while a round deletes anything (see Store::prune_events).
                Ok(n) if n > 0 => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning audit events failed");
                    break;
                }
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn caller() -> Caller {
        Caller {
            account_id: "123456789012".into(),
            identity: Identity::User {
                name: "bob".into(),
                user_id: "AIDAEXAMPLE".into(),
                arn: "arn:aws:iam::123456789012:user/bob".into(),
            },
            access_key_id: "AKIAEXAMPLE".into(),
            session_expires: None,
        }
    }

    fn event(principal: Principal) -> AuditEvent {
        AuditEvent {
            time: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            service: "iam".into(),
            event_name: "CreateAccessKey".into(),
            region: "us-east-1".into(),
            source_ip: Some("10.0.0.1".into()),
            user_agent: Some("aws-cli/2".into()),
            principal,
            request_parameters: request_parameters(
                [
                    ("Action", "CreateAccessKey"),
                    ("Version", "2010-05-08"),
                    ("UserName", "bob"),
                    ("NewPassword", "hunter2"),
                ]
                .into_iter(),
            ),
            response_xml: Some("<R><CreateAccessKeyResult><AccessKey><AccessKeyId>AKIANEW</AccessKeyId><SecretAccessKey>SHHH</SecretAccessKey></AccessKey></CreateAccessKeyResult></R>".into()),
            error: None,
            request_id: "req-1".into(),
            read_only: false,
        }
    }

    #[test]
    fn an_event_has_cloudtrails_shape_and_no_secret() {
        let record = event(Principal::Caller(caller())).into_record();
        let json = cloudtrail_json(&record);
        assert!(
            !json.contains("SHHH") && !json.contains("hunter2"),
            "{json}"
        );
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["eventSource"], "iam.amazonaws.com");
        assert_eq!(v["eventTime"], "2026-11-18T11:06:40Z");
        assert_eq!(v["userIdentity"]["type"], "IAMUser");
        assert_eq!(v["userIdentity"]["userName"], "bob");
        assert_eq!(v["userIdentity"]["accessKeyId"], "AKIAEXAMPLE");
        assert_eq!(v["requestParameters"]["userName"], "bob");
        assert_eq!(v["requestParameters"]["newPassword"], HIDDEN);
        assert_eq!(v["responseElements"]["accessKey"]["accessKeyId"], "AKIANEW");
        assert_eq!(v["readOnly"], false);
        assert_eq!(v["eventType"], "AwsApiCall");
        assert_eq!(v["sourceIPAddress"], "10.0.0.1");
        assert_eq!(v["recipientAccountId"], "123456789012");
        assert_eq!(v["eventCategory"], "Management");
        let r = record;
        assert_eq!(r.account_id.as_deref(), Some("123456789012"));
        assert_eq!(r.user_name.as_deref(), Some("bob"));
        assert_eq!(r.event_id, v["eventID"]);
        // The id carries the event's millisecond.
        assert_eq!(
            keyward_store::event_id_time(&r.event_id),
            Some(1_795_000_000_000)
        );
        // CloudTrail's field order, not alphabetical.
        assert!(
            json.starts_with("{\"eventVersion\":\"1.08\",\"userIdentity\":{\"type\":\"IAMUser\"")
        );
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let nasty = "a\"b\\c\n\r\t\u{1}\u{1f}é😀</x>";
        let mut ev = event(Principal::Anonymous);
        ev.user_agent = Some(nasty.into());
        ev.error = Some(("Code".into(), nasty.into()));
        let json = cloudtrail_json(&ev.into_record());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["userAgent"], nasty);
        assert_eq!(v["errorMessage"], nasty);
        assert_eq!(v["userIdentity"]["type"], "Unknown");
        assert_eq!(v["recipientAccountId"], Value::Null);
        assert!(!json.contains('\n'));
    }

    #[test]
    fn a_failed_key_belongs_to_the_account_it_encodes() {
        let key = keyward_ids::new_access_key_id(keyward_ids::KeyKind::LongTerm, "210987654321");
        let mut ev = event(Principal::Key(key.clone()));
        ev.error = Some(("InvalidClientTokenId".into(), "bad".into()));
        ev.response_xml = None;
        let record = ev.into_record();
        let v: Value = serde_json::from_str(&cloudtrail_json(&record)).unwrap();
        assert_eq!(v["userIdentity"]["type"], "Unknown");
        assert_eq!(v["userIdentity"]["accountId"], "210987654321");
        assert_eq!(v["userIdentity"]["accessKeyId"], key.as_str());
        assert_eq!(v["errorCode"], "InvalidClientTokenId");
        assert_eq!(v["errorMessage"], "bad");
        assert_eq!(record.account_id.as_deref(), Some("210987654321"));
        let none = event(Principal::Anonymous).into_record();
        assert!(none.account_id.is_none());
    }

    #[test]
    fn read_only_operations() {
        for op in [
            "GetCallerIdentity",
            "ListUsers",
            "GetAccessKeyLastUsed",
            "LookupEvents",
        ] {
            assert!(is_read_only(op), "{op}");
        }
        for op in [
            "GetSessionToken",
            "CreateAccessKey",
            "DeleteUser",
            "UpdateAccessKey",
        ] {
            assert!(!is_read_only(op), "{op}");
        }
    }
}
