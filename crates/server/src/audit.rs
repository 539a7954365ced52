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
use keyward_store::{AuditRecord, Store};
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

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

fn identity_json(p: &Principal) -> (Value, Option<String>, Option<String>, Option<String>) {
    let mut m = Map::new();
    let (account, key, user) = match p {
        Principal::Caller(c) => {
            let kind = match c.identity {
                Identity::Root => "Root",
                Identity::User { .. } => "IAMUser",
            };
            m.insert("type".into(), kind.into());
            m.insert("principalId".into(), c.user_id().into());
            m.insert("arn".into(), c.arn().into());
            m.insert("accountId".into(), c.account_id.clone().into());
            m.insert("accessKeyId".into(), c.access_key_id.clone().into());
            if let Some(n) = c.user_name() {
                m.insert("userName".into(), n.into());
            }
            if c.is_session() {
                m.insert(
                    "sessionContext".into(),
                    serde_json::json!({"attributes": {"mfaAuthenticated": "false"}}),
                );
            }
            (
                Some(c.account_id.clone()),
                Some(c.access_key_id.clone()),
                c.user_name().map(str::to_owned),
            )
        }
        Principal::Key(key) => {
            m.insert("type".into(), "Unknown".into());
            let account = keyward_ids::account_of_key_id(key);
            if let Some(a) = &account {
                m.insert("accountId".into(), a.clone().into());
            }
            m.insert("accessKeyId".into(), key.clone().into());
            (account, Some(key.clone()), None)
        }
        Principal::Anonymous => {
            m.insert("type".into(), "Unknown".into());
            (None, None, None)
        }
    };
    (Value::Object(m), account, key, user)
}

impl AuditEvent {
    /// The CloudTrail JSON (one line) and, when the event belongs to an account, its store record.
    pub fn render(&self) -> (String, Option<AuditRecord>) {
        let event_id = keyward_protocol::new_request_id();
        let (identity, account, key, user) = identity_json(&self.principal);
        let mut m = Map::new();
        m.insert("eventVersion".into(), EVENT_VERSION.into());
        m.insert("userIdentity".into(), identity);
        m.insert("eventTime".into(), iso8601(self.time).into());
        let source = format!("{}.amazonaws.com", self.service);
        m.insert("eventSource".into(), source.clone().into());
        m.insert("eventName".into(), self.event_name.clone().into());
        m.insert("awsRegion".into(), self.region.clone().into());
        m.insert(
            "sourceIPAddress".into(),
            self.source_ip.clone().map_or(Value::Null, Value::String),
        );
        m.insert(
            "userAgent".into(),
            self.user_agent.clone().map_or(Value::Null, Value::String),
        );
        if let Some((code, message)) = &self.error {
            m.insert("errorCode".into(), code.clone().into());
            m.insert("errorMessage".into(), message.clone().into());
        }
        m.insert(
            "requestParameters".into(),
            self.request_parameters.clone().unwrap_or(Value::Null),
        );
        let response = self
            .response_xml
            .as_deref()
            .and_then(elements::response_elements)
            .unwrap_or(Value::Null);
        m.insert("responseElements".into(), response);
        m.insert("requestID".into(), self.request_id.clone().into());
        m.insert("eventID".into(), event_id.clone().into());
        m.insert("readOnly".into(), self.read_only.into());
        m.insert("eventType".into(), "AwsApiCall".into());
        m.insert("managementEvent".into(), true.into());
        m.insert("recipientAccountId".into(), account.clone().into());
        m.insert("eventCategory".into(), "Management".into());
        let body = Value::Object(m).to_string();
        let record = account.map(|account_id| AuditRecord {
            account_id,
            time: self.time,
            event_id,
            event_name: self.event_name.clone(),
            event_source: source,
            access_key_id: key,
            user_name: user,
            read_only: self.read_only,
            body: body.clone(),
        });
        (body, record)
    }
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
    /// A rendered event (its JSON line and store record), rendered by the request that made it so
    /// the writer's batches do not hold the runtime for milliseconds of rendering.
    Event(
        String,
        Option<Box<AuditRecord>>,
        Option<oneshot::Sender<()>>,
    ),
    Close(oneshot::Sender<()>),
}

/// The handle requests use to record events.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    stats: Arc<AuditStats>,
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
        tokio::spawn(writer(
            rx,
            sink,
            head,
            keep.then(|| store.clone()),
            Arc::clone(&stats),
        ));
        if keep {
            tokio::spawn(pruner(store, config.retention));
        }
        Ok(Auditor { tx, stats })
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
        if self
            .tx
            .send({
                let (json, record) = event.render();
                Msg::Event(json, record.map(Box::new), ack)
            })
            .await
            .is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(d) = done {
            let _ = d.await;
        }
    }

    /// Writes every event sent so far, then stops the writer.
    pub async fn close(&self) {
        let (a, d) = oneshot::channel();
        if self.tx.send(Msg::Close(a)).await.is_ok() {
            let _ = d.await;
        }
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Msg>,
    sink: Option<Sink>,
    mut head: chain::ChainHead,
    store: Option<Store>,
    stats: Arc<AuditStats>,
) {
    let sink = sink.map(|s| Arc::new(Mutex::new(s)));
    let mut batch = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let deadline = tokio::time::Instant::now() + LINGER;
        let urgent = |m: &Msg| matches!(m, Msg::Event(_, _, Some(_)) | Msg::Close(_));
        let mut now = urgent(&first);
        batch.push(first);
        loop {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        now |= urgent(&m);
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            if now || batch.len() >= MAX_BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => {
                    now |= urgent(&m);
                    batch.push(m);
                }
                // Closed (the server is stopping) or the deadline passed: write what there is.
                Ok(None) | Err(_) => break,
            }
        }
        let mut text = String::new();
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let mut closing = Vec::new();
        for m in batch.drain(..) {
            match m {
                Msg::Event(json, record, ack) => {
                    if sink.is_some() {
                        text.push_str(&head.link(&json));
                    }
                    if store.is_some() {
                        records.extend(record.map(|r| *r));
                    }
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
                match store.append_events(records.clone()).await {
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
                Ok(n) if n as usize >= PRUNE_BATCH => tokio::task::yield_now().await,
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
        let (json, record) = event(Principal::Caller(caller())).render();
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
        let r = record.unwrap();
        assert_eq!(r.account_id, "123456789012");
        assert_eq!(r.user_name.as_deref(), Some("bob"));
        assert_eq!(r.event_id, v["eventID"]);
        assert_eq!(r.body, json);
    }

    #[test]
    fn a_failed_key_belongs_to_the_account_it_encodes() {
        let key = keyward_ids::new_access_key_id(keyward_ids::KeyKind::LongTerm, "210987654321");
        let mut ev = event(Principal::Key(key.clone()));
        ev.error = Some(("InvalidClientTokenId".into(), "bad".into()));
        ev.response_xml = None;
        let (json, record) = ev.render();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["userIdentity"]["accountId"], "210987654321");
        assert_eq!(v["userIdentity"]["accessKeyId"], key.as_str());
        assert_eq!(v["errorCode"], "InvalidClientTokenId");
        assert_eq!(record.unwrap().account_id, "210987654321");
        let (_, none) = event(Principal::Anonymous).render();
        assert!(none.is_none());
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
