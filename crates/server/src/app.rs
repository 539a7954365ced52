//! The application: one request in, one response out, independent of sockets so tests can call
//! [`App::handle`] directly.

use crate::audit::{self, AuditEvent, Auditor, Principal};
use crate::auth::{self, malformed, missing_authentication, AuthFailure, Check};
use crate::caller::CallerRef;
use crate::http::ConnInfo;
use crate::keycache::KeyCache;
use crate::metrics::Metrics;
use crate::throttle::{self, Gate, Reason, Source, Throttle, ThrottleConfig};
use crate::{cloudtrail, iam, s3, sts};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::Full;
use keyward_protocol::error::Rendered;
use keyward_protocol::{new_request_id, ApiError, Dialect, Params};
use keyward_sigv4::{Request, SignedRequest, SigningKeyCache};
use keyward_store::{Change, EventId, Sealer, Store, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

/// `x-amz-target` (JSON protocol), as a ready header name: a `&str` look-up parses it each time.
const X_AMZ_TARGET: http::HeaderName = http::HeaderName::from_static("x-amz-target");

/// Response header names, ready made: inserting by `&str` parses, lowercases and copies the name
/// on every response (header names are case-insensitive and go out in lowercase either way).
const X_AMZN_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-amzn-requestid");
/// S3's request id header.
const X_AMZ_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-amz-request-id");
/// The JSON protocol's error type header.
const X_AMZN_ERROR_TYPE: http::HeaderName = http::HeaderName::from_static("x-amzn-errortype");

/// Largest query-protocol body accepted.
pub const QUERY_BODY_LIMIT: usize = 1 << 20;
/// Largest S3 body read (S3 operations other than ListBuckets are not implemented).
pub const S3_BODY_LIMIT: usize = 8 << 20;

/// Default time allowed to receive a request's body once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 20;

/// Default lifetime of a verification cache entry. Changes made through a node evict its entries at
/// once, and other nodes' changes arrive by notification (PostgreSQL); the lifetime bounds staleness
/// only when a notification is lost, and how long verification survives a database outage.
pub const DEFAULT_KEY_CACHE_TTL_SECS: u64 = 10;

/// Settings of the application that are not the store.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Pretend the server clock is off by this many seconds (tests of clock skew); 0 in production.
    pub clock_offset_secs: i64,
    /// How long a verification cache entry is trusted.
    pub key_cache_ttl: Duration,
    /// Most keys in the verification cache.
    pub key_cache_capacity: usize,
    /// Failed-authentication throttling.
    pub throttle: ThrottleConfig,
    /// Time allowed to receive a request's body (a client that stops sending mid-body is answered
    /// `RequestTimeout` and its connection closed).
    pub body_read_timeout: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            clock_offset_secs: 0,
            key_cache_ttl: Duration::from_secs(DEFAULT_KEY_CACHE_TTL_SECS),
            key_cache_capacity: 100_000,
            throttle: ThrottleConfig::default(),
            body_read_timeout: Duration::from_secs(DEFAULT_BODY_READ_TIMEOUT_SECS),
        }
    }
}

/// The shared state of the server.
pub struct App {
    store: Store,
    session_sealer: Sealer,
    signing_keys: SigningKeyCache,
    key_cache: KeyCache,
    metrics: Metrics,
    throttle: Throttle,
    config: AppConfig,
    auditor: Option<Auditor>,
}

/// What a request showed about itself, for its audit event, borrowed from the request (its
/// parsed signature, parameters and headers).
#[derive(Default, Clone)]
struct Trace<'a> {
    service: Option<&'a str>,
    region: Option<&'a str>,
    action: Option<&'a str>,
    key_id: Option<&'a str>,
    caller: Option<CallerRef>,
    /// The owner of the key a failed request presented, when the key exists.
    owner: Option<CallerRef>,
    params: Option<serde_json::Value>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The API version of IAM's query requests.
pub const IAM_VERSION: &str = "2010-05-08";
/// The API version of STS's query requests.
pub const STS_VERSION: &str = "2011-06-15";

/// AWS's answer for an action the service does not have at the `version` the request names
/// (`NO_VERSION_SPECIFIED` when it names none).
pub fn invalid_action(action: &str, version: &str) -> ApiError {
    ApiError::new(
        400,
        "InvalidAction",
        format!("Could not find operation {action} for version {version}"),
    )
}

impl App {
    /// An application over `store`, sealing session tokens with `session_sealer`.
    pub fn new(store: Store, session_sealer: Sealer, config: AppConfig) -> Self {
        Self {
            store,
            session_sealer,
            // One derived key per (key, day, region, service): sized like the verification cache.
            signing_keys: SigningKeyCache::new(config.key_cache_capacity),
            key_cache: KeyCache::new(config.key_cache_ttl, config.key_cache_capacity),
            metrics: Metrics::default(),
            throttle: Throttle::new(config.throttle.clone()),
            config,
            auditor: None,
        }
    }

    /// The application with an audit trail: every call and authentication failure is recorded.
    pub fn with_auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// The audit trail, if on.
    pub fn auditor(&self) -> Option<&Auditor> {
        self.auditor.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sealer of session tokens.
    pub fn session_sealer(&self) -> &Sealer {
        &self.session_sealer
    }

    /// The derived signing key cache.
    pub fn signing_keys(&self) -> &SigningKeyCache {
        &self.signing_keys
    }

    /// The verification cache.
    pub fn key_cache(&self) -> &KeyCache {
        &self.key_cache
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The failed-authentication throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The server's notion of now (the real clock, shifted by the configured offset).
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let off = self.config.clock_offset_secs;
        if off >= 0 {
            now + Duration::from_secs(off as u64)
        } else {
            now - Duration::from_secs(off.unsigned_abs())
        }
    }

    /// Starts evicting verification cache entries when another node announces a change (PostgreSQL);
    /// `None` for stores without notifications, where the entries' short lifetime bounds staleness.
    pub fn spawn_cache_invalidation(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = self.store.subscribe_changes()?;
        let app = Arc::clone(self);
        Some(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(Change::AccessKey(id)) => app.key_cache.evict(&id),
                    Ok(Change::User { account_id, name }) => {
                        app.key_cache.evict_owner(&account_id, Some(&name))
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => app.key_cache.clear(),
                    Err(RecvError::Closed) => break,
                }
            }
        }))
    }

    /// Starts re-reading, every eighth of the cache lifetime, the keys in use whose entries are
    /// about to expire ([`crate::auth::refresh_keys`]); `None` when nothing is cached.
    pub fn spawn_key_refresh(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let ttl = self.key_cache.ttl();
        if ttl.is_zero() {
            return None;
        }
        let every = (ttl / 8).max(Duration::from_millis(50));
        let app = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Failures in a row: the first is a warning, the next ones (every tick while the
            // store is away) are not repeated at that level, and the recovery is noted.
            let mut failing = 0u64;
            loop {
                tick.tick().await;
                match crate::auth::refresh_keys(&app).await {
                    Ok(read) if read > 0 && failing > 0 => {
                        tracing::info!(
                            failures = failing,
                            "refreshing cached access keys works again"
                        );
                        failing = 0;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // The entries then expire and requests read their keys themselves.
                        failing += 1;
                        if failing == 1 {
                            tracing::warn!(error = %e, "refreshing cached access keys failed");
                        } else {
                            tracing::debug!(error = %e, failures = failing, "refreshing cached access keys failed again");
                        }
                    }
                }
            }
        }))
    }

    /// Maps a store failure to an API error; internal details go to the log only.
    pub fn store_error(&self, e: StoreError) -> ApiError {
        match e {
            StoreError::NoSuchEntity(m) => ApiError::new(404, "NoSuchEntity", m),
            StoreError::EntityAlreadyExists(m) => ApiError::new(409, "EntityAlreadyExists", m),
            StoreError::LimitExceeded(m) => ApiError::new(409, "LimitExceeded", m),
            StoreError::DeleteConflict(m) => ApiError::new(409, "DeleteConflict", m),
            // What the request's own checks let through but the store refused (a Marker that is
            // not one of its pages', say): the client's fault, as in IAM.
            StoreError::InvalidInput(m) => ApiError::new(400, "ValidationError", m),
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::service_unavailable()
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }

    /// Answers one request; the connection it came on, if any, is read from the request's
    /// [`ConnInfo`] extension.
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = req.extensions().get::<ConnInfo>().copied();
        self.handle_on(req, conn).await
    }

    /// Answers one request that came on the connection `conn` (the listener passes it here
    /// instead of as an extension, which would cost a map and two allocations per request).
    pub async fn handle_on<B>(
        &self,
        req: http::Request<B>,
        conn: Option<ConnInfo>,
    ) -> http::Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let now = self.now();
        let mut resp = self.answer(parts, body, conn, now).await;
        if self.config.clock_offset_secs != 0 {
            // hyper adds `Date` from the host's clock (it reads the clock on every poll of a
            // connection whether it adds the header or not). A server told to run off-clock shows
            // that clock instead, as a skewed host would, so clients that measure skew from `Date`
            // (the doctor, SDKs) see it.
            if let Ok(v) = HeaderValue::from_str(&keyward_protocol::time::http_date(now)) {
                resp.headers_mut().insert(http::header::DATE, v);
            }
        }
        resp
    }

    async fn answer<B>(
        &self,
        parts: http::request::Parts,
        body: B,
        conn: Option<ConnInfo>,
        now: SystemTime,
    ) -> http::Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = parts.uri.path();
        if let Some(internal) = path.strip_prefix("/_keyward/") {
            return self.internal(internal);
        }
        let keyward_protocol::RequestId {
            bytes: rid_bytes,
            text: rid,
        } = new_request_id();
        let query = parts.uri.query().unwrap_or("");
        let sreq = Request {
            method: parts.method.as_str(),
            path,
            query,
            headers: &parts.headers,
        };
        let parsed = keyward_sigv4::parse(&sreq);
        let mut dialect = match &parsed {
            Ok(Some(SignedRequest::V4(_))) if parts.headers.contains_key(&X_AMZ_TARGET) => {
                Dialect::Json
            }
            Ok(Some(SignedRequest::V4(a))) => match a.scope().service() {
                "s3" => Dialect::S3,
                "sts" => Dialect::Sts,
                "iam" => Dialect::Iam,
                _ => guess_dialect(&parts.method, query, &parts.headers),
            },
            Ok(Some(SignedRequest::V2Presigned(_))) => Dialect::S3,
            _ => guess_dialect(&parts.method, query, &parts.headers),
        };
        let limit = if dialect == Dialect::S3 {
            S3_BODY_LIMIT
        } else {
            QUERY_BODY_LIMIT
        };
        let mut read = std::pin::pin!(read_body(body, limit));
        // A small body has usually arrived with the head: only a body still on its way gets a
        // timer (arming one reads the clock and builds a timer entry on every request).
        let read = match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(done) => Ok(done),
            Poll::Pending => tokio::time::timeout(self.config.body_read_timeout, read).await,
        };
        let Ok(read) = read else {
            let err = ApiError::new(
                400,
                "RequestTimeout",
                "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
            );
            let mut resp = self.error_response(&err, dialect, rid);
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        };
        let body = match read {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                let err = match dialect {
                    Dialect::S3 => ApiError::new(
                        400,
                        "EntityTooLarge",
                        "Your proposed upload exceeds the maximum allowed size",
                    ),
                    _ => ApiError::new(
                        413,
                        "RequestEntityTooLarge",
                        format!("Request body must be no larger than {limit} bytes."),
                    ),
                };
                return self.error_response(&err, dialect, rid);
            }
            Err(BodyError::Incomplete) => {
                let err = ApiError::new(
                    400,
                    "IncompleteBody",
                    "The request body terminated unexpectedly",
                );
                return self.error_response(&err, dialect, rid);
            }
        };
        // Before any lookup or signature check: is the source, or this source for this key id, refused?
        let source = conn.map(|c| Source::of(c.peer.ip()));
        let key_id = match &parsed {
            Ok(Some(SignedRequest::V4(a))) => Some(a.access_key_id()),
            Ok(Some(SignedRequest::V2Presigned(a))) => Some(a.access_key_id()),
            _ => None,
        };
        let gate = self.throttle.check(source, key_id);
        if gate.refuse.is_some() {
            return self.error_response(&throttle::throttling_error(dialect), dialect, rid);
        }
        let guard = AuthGuard {
            gate,
            source,
            key_id,
        };
        // Requests refused by the throttle above are not audited: a flood must not become a flood of
        // events; they are counted in the metrics instead.
        let mut trace = Trace::default();
        let mut params = Params::default();
        // An IAM change's key writes hold their commit until its audit event joins their
        // transaction (one commit for both; see keyward_store::holding_commits), when the
        // event goes to the store at all.
        let hold =
            dialect == Dialect::Iam && self.auditor.as_ref().is_some_and(|a| a.keeps_events());
        let dispatched = self.dispatch(
            &sreq,
            &body,
            &mut params,
            &parsed,
            &mut dialect,
            &rid,
            now,
            &guard,
            &mut trace,
        );
        let (mut result, holds) = if hold {
            keyward_store::holding_commits(dispatched).await
        } else {
            (dispatched.await, Vec::new())
        };
        if let Some(auditor) = &self.auditor {
            let source_ip = conn.map(|c| c.peer.ip());
            let retry = (!holds.is_empty()).then(|| trace.clone());
            let stored = self
                .audit(
                    auditor,
                    &parts,
                    source_ip,
                    &result,
                    dialect,
                    trace,
                    EventId::Uuid(rid_bytes),
                    now,
                    holds,
                )
                .await;
            if let (Err(e), Some(trace)) = (stored, retry) {
                // The writes and their event were rolled back: the answer is the failure, and
                // that is what the trail records.
                result = Err(self.store_error(e));
                let _ = self
                    .audit(
                        auditor,
                        &parts,
                        source_ip,
                        &result,
                        dialect,
                        trace,
                        EventId::Uuid(rid_bytes),
                        now,
                        Vec::new(),
                    )
                    .await;
            }
        } else {
            for h in holds {
                if let Err(e) = h.commit().await {
                    result = Err(self.store_error(e));
                }
            }
        }
        match result {
            Ok(body) => {
                let ct = match dialect {
                    Dialect::S3 => "application/xml",
                    Dialect::Json => "application/x-amz-json-1.1",
                    _ => "text/xml",
                };
                self.metrics.response(200);
                response(StatusCode::OK, ct, rid, dialect, Bytes::from(body))
            }
            Err(e) => self.error_response(&e, dialect, rid),
        }
    }

    /// Records the audit event of one answered request; a call that changed state waits until
    /// its event is durable. With `holds` (the request's held writes) the event joins their
    /// transaction, and the commit's outcome is returned.
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        auditor: &Auditor,
        parts: &http::request::Parts,
        source_ip: Option<std::net::IpAddr>,
        result: &Result<String, ApiError>,
        dialect: Dialect,
        trace: Trace<'_>,
        rid: EventId<'_>,
        now: SystemTime,
        holds: Vec<keyward_store::HeldCommit>,
    ) -> Result<(), keyward_store::StoreError> {
        let service = trace.service.unwrap_or(match dialect {
            Dialect::Iam => "iam",
            Dialect::Sts => "sts",
            Dialect::S3 => "s3",
            Dialect::Json => "cloudtrail",
        });
        let event_name = trace.action.unwrap_or(match dialect {
            Dialect::S3 => s3_event_name(parts.method.as_str(), parts.uri.path()),
            _ => "Unknown",
        });
        let read_only = audit::is_read_only(event_name);
        let authenticated = trace.caller.is_some();
        let principal = match (trace.caller, trace.owner, trace.key_id) {
            (Some(c), _, _) => Principal::Caller(c),
            // A failure with a key that exists (wrong signature, inactive key): its owner.
            (None, Some(o), _) => Principal::Caller(o),
            (None, None, Some(k)) => Principal::Key(k.to_owned()),
            (None, None, None) => Principal::Anonymous,
        };
        let (error, response_xml) = match result {
            Ok(body) => (None, (!read_only).then_some(body.as_str())),
            Err(e) => (Some((&*e.code, e.message.as_str())), None),
        };
        let durable = authenticated && !read_only && error.is_none();
        let event = AuditEvent {
            time: now,
            service,
            event_name,
            region: trace.region.unwrap_or("us-east-1"),
            source_ip,
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            principal,
            request_parameters: trace.params,
            response_xml,
            error,
            request_id: rid,
            read_only,
        };
        if holds.is_empty() {
            auditor.record(event, durable).await;
            Ok(())
        } else {
            auditor.record_held(event, holds).await
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch<'a>(
        &self,
        req: &Request<'a>,
        body: &'a Bytes,
        params: &'a mut Params<'a>,
        parsed: &'a Result<Option<SignedRequest>, keyward_sigv4::ParseError>,
        dialect: &mut Dialect,
        rid: &str,
        now: SystemTime,
        guard: &AuthGuard<'_>,
        trace: &mut Trace<'a>,
    ) -> Result<String, ApiError> {
        let auditing = self.auditor.is_some();
        if matches!(*dialect, Dialect::Iam | Dialect::Sts) {
            let unscoped = parsed.as_ref().is_ok_and(|p| p.is_none()) || parsed.is_err();
            let form = req.method == "POST" && is_form(req.headers);
            let parsed_form = params
                .extend_from_form(req.query.as_bytes())
                .and_then(|()| {
                    if form {
                        params.extend_from_form(body)
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = parsed_form {
                // Answered in STS's namespace when the raw parameters say STS.
                if unscoped && raw_names_sts(req.query.as_bytes(), form.then_some(&body[..])) {
                    *dialect = Dialect::Sts;
                }
                return Err(malformed_query(e));
            }
            if parsed.as_ref().is_ok_and(|p| p.is_none()) || parsed.is_err() {
                // Without a credential scope, the parameters tell STS from IAM.
                let action = params.get("Action").unwrap_or("");
                if params.get("Version") == Some(STS_VERSION) || sts::ACTIONS.contains(&action) {
                    *dialect = Dialect::Sts;
                }
            }
        }
        // Filled: from here on only read, for as long as the trace lives.
        let params: &'a Params<'a> = params;
        if auditing && matches!(*dialect, Dialect::Iam | Dialect::Sts) {
            trace.action = params.get("Action");
            trace.params = audit::request_parameters(params.iter());
        }
        if auditing {
            if let Some(target) = req.headers.get(&X_AMZ_TARGET) {
                let target = target.to_str().unwrap_or("");
                let op = target.rsplit('.').next().unwrap_or(target);
                trace.action = Some(op);
                if cloudtrail::operation(target).is_some() {
                    trace.params = serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                        .map(camel_keys);
                }
            }
            match parsed {
                Ok(Some(SignedRequest::V4(a))) => {
                    trace.service = Some(a.scope().service());
                    trace.region = Some(a.scope().region());
                    trace.key_id = Some(a.access_key_id());
                }
                Ok(Some(SignedRequest::V2Presigned(a))) => {
                    trace.service = Some("s3");
                    trace.key_id = Some(a.access_key_id());
                }
                _ => {}
            }
        }
        let parsed = match parsed {
            Ok(Some(p)) => p,
            // No credential at all: nothing was guessed, and nothing looked up; not counted.
            Ok(None) => return Err(self.auth_failed(missing_authentication(*dialect))),
            Err(e) => {
                let authorization = req
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let f = AuthFailure::from(malformed(*dialect, e, authorization));
                return Err(self.auth_failed_counted(f, *dialect, guard));
            }
        };
        let check = Check {
            app: self,
            req,
            body,
            parsed,
            dialect: *dialect,
            now,
        };
        // A cached key is checked without building the future of the store's path.
        let authn = match check.cached() {
            Some(r) => r,
            None => check.authenticate().await,
        };
        let authn = authn.map_err(|mut f| {
            if auditing {
                trace.owner = f.owner.take();
            }
            self.auth_failed_counted(f, *dialect, guard)
        })?;
        if auditing {
            trace.caller = Some(authn.caller.clone());
        }
        self.metrics
            .auth_ok
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let caller = &authn.caller;
        let (service, region) = auth::service_region(parsed);
        if authn.note_use {
            self.store
                .record_key_use(caller.access_key_id(), now, service, region);
        }
        if *dialect == Dialect::S3 {
            return s3::handle(caller, req.method, req.path, req.query);
        }
        if *dialect == Dialect::Json {
            let target = req
                .headers
                .get(&X_AMZ_TARGET)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if let Some(op) = cloudtrail::operation(target) {
                return cloudtrail::handle(self, caller, op, body).await;
            }
            return Err(ApiError::new(
                400,
                "UnknownOperationException",
                format!("The operation {target} is not supported by keyward."),
            ));
        }
        let Some(action) = params.get("Action") else {
            return Err(ApiError::new(
                400,
                "MissingAction",
                "The request is missing an action or a required parameter.",
            ));
        };
        let is_sts = match service {
            "sts" => true,
            "iam" => false,
            // AWS routes by endpoint, and each endpoint refuses a credential scoped to another
            // service, naming its own; keyward has one endpoint and names the service the action
            // belongs to.
            _ => {
                let expected = if sts::ACTIONS.contains(&action) {
                    *dialect = Dialect::Sts;
                    "sts"
                } else {
                    "iam"
                };
                return Err(ApiError::new(
                    403,
                    "SignatureDoesNotMatch",
                    format!("Credential should be scoped to correct service: '{expected}'."),
                ));
            }
        };
        // An operation is found by its name and the API version the request names.
        let (version, answer_as) = if is_sts {
            (STS_VERSION, Dialect::Sts)
        } else {
            (IAM_VERSION, Dialect::Iam)
        };
        *dialect = answer_as;
        match params.get("Version") {
            Some(v) if v == version => {}
            other => {
                return Err(invalid_action(
                    action,
                    other.unwrap_or("NO_VERSION_SPECIFIED"),
                ))
            }
        }
        if is_sts {
            sts::handle(self, caller, action, params, rid, now).await
        } else {
            if !iam::ACTIONS.contains(&action) {
                return Err(invalid_action(action, IAM_VERSION));
            }
            iam::handle(self, caller, action, params, rid).await
        }
    }

    fn auth_failed(&self, e: ApiError) -> ApiError {
        self.metrics.auth_failure(&e.code);
        e
    }

    /// Counts a failure for the throttle; a failure for a hot key id is answered with the throttling
    /// error instead (its source is refused from now on).
    fn auth_failed_counted(
        &self,
        f: AuthFailure,
        dialect: Dialect,
        guard: &AuthGuard<'_>,
    ) -> ApiError {
        let e = self.auth_failed(f.error);
        if !f.counts {
            return e;
        }
        self.throttle.failure(guard.source, guard.key_id);
        if guard.gate.key_hot {
            self.throttle.refused(Reason::KeyFailed);
            return throttle::throttling_error(dialect);
        }
        e
    }

    fn error_response(
        &self,
        e: &ApiError,
        dialect: Dialect,
        rid: String,
    ) -> http::Response<Full<Bytes>> {
        self.metrics.response(e.status);
        if e.status >= 500 {
            tracing::warn!(code = %e.code, request_id = %rid, "server error answered");
        } else {
            tracing::debug!(code = %e.code, request_id = %rid, "client error answered");
        }
        let Rendered {
            status,
            content_type,
            body,
        } = e.render(dialect, &rid);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = response(status, content_type, rid, dialect, Bytes::from(body));
        if dialect == Dialect::Json {
            if let Ok(v) = HeaderValue::from_str(&e.code) {
                resp.headers_mut().insert(X_AMZN_ERROR_TYPE, v);
            }
        }
        resp
    }

    fn internal(&self, what: &str) -> http::Response<Full<Bytes>> {
        match what {
            "health" => plain(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"ok\n"),
            ),
            "metrics" => {
                let mut text = self.metrics.render();
                text.push_str(&self.throttle.render_metrics());
                if let Some(a) = &self.auditor {
                    text.push_str(&a.stats().render());
                }
                plain(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    Bytes::from(text),
                )
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"not found\n"),
            ),
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    /// More than the limit was sent.
    TooLarge,
    /// The body failed or ended before its declared length.
    Incomplete,
}

/// Reads a whole body of at most `limit` bytes. A body that comes in one frame, the usual case,
/// is returned as that frame's bytes, without a copy or an allocation; trailers are ignored.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
{
    // A declared length over the limit is not refused before reading: the client would meet a
    // closed connection in the middle of its upload instead of the answer. As with
    // http_body_util's Limited, the body is read up to the limit.
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyError::Incomplete)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            drain(body.as_mut()).await;
            return Err(BodyError::TooLarge);
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut v = Vec::with_capacity(len.max(f.len() * 2).min(limit));
                v.extend_from_slice(f);
                v.extend_from_slice(&data);
                joined = Some(v);
            }
            (Some(_), Some(v)) => v.extend_from_slice(&data),
        }
    }
    Ok(match joined {
        Some(v) => Bytes::from(v),
        None => first.unwrap_or_default(),
    })
}

/// Most bytes of a refused body that are still read, and dropped, before the refusal is sent.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads and drops what is left of a body that is over the limit (up to [`DRAIN_LIMIT`] bytes), so
/// that a client which sends its whole body before it reads the answer (botocore, urllib) reads
/// the refusal: a connection closed with its upload unread is reset, and the client meets a broken
/// pipe instead. A longer body is cut off there and its connection closed.
async fn drain<B>(mut body: std::pin::Pin<&mut B>)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut dropped = 0usize;
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if let Ok(data) = frame.into_data() {
            dropped = dropped.saturating_add(data.len());
            if dropped > DRAIN_LIMIT {
                return;
            }
        }
    }
}

/// CloudTrail's name of an S3 request.
fn s3_event_name(method: &str, path: &str) -> &'static str {
    let object = path.trim_start_matches('/').contains('/');
    let bucket = !path.trim_start_matches('/').is_empty();
    match (method, bucket, object) {
        ("GET", false, _) => "ListBuckets",
        ("GET", true, false) => "ListObjects",
        ("GET", true, true) => "GetObject",
        ("HEAD", true, false) => "HeadBucket",
        ("HEAD", true, true) => "HeadObject",
        ("PUT", true, false) => "CreateBucket",
        ("PUT", true, true) => "PutObject",
        ("DELETE", true, false) => "DeleteBucket",
        ("DELETE", true, true) => "DeleteObject",
        ("POST", _, _) => "PostObject",
        _ => "Unknown",
    }
}

/// A JSON request body as CloudTrail's `requestParameters`: member names in camelCase.
fn camel_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    // LookupEvents' times (epoch seconds on the wire) as CloudTrail writes them.
                    let v = match (k.as_str(), &v) {
                        ("StartTime" | "EndTime", serde_json::Value::Number(n)) => n
                            .as_f64()
                            .filter(|t| t.is_finite() && *t >= 0.0)
                            .and_then(|t| {
                                let t = std::time::UNIX_EPOCH
                                    + std::time::Duration::from_secs_f64(t.min(4e11));
                                audit::cloudtrail_time(&keyward_protocol::time::iso8601(t))
                            })
                            .map_or(v, serde_json::Value::String),
                        _ => v,
                    };
                    (audit::camel(&k), camel_keys(v))
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(camel_keys).collect())
        }
        other => other,
    }
}

/// What the throttle needs to count a request's authentication failure.
struct AuthGuard<'a> {
    gate: Gate,
    source: Option<Source>,
    key_id: Option<&'a str>,
}

/// Whether unparsable query or form parameters still name STS: its `Version`, or one of its
/// actions (as the parsed parameters would, see [`App::dispatch`]).
fn raw_names_sts(query: &[u8], body: Option<&[u8]>) -> bool {
    let pairs = query
        .split(|&b| b == b'&')
        .chain(body.into_iter().flat_map(|b| b.split(|&c| c == b'&')));
    pairs.into_iter().any(|pair| {
        if let Some(v) = pair.strip_prefix(b"Version=") {
            v == STS_VERSION.as_bytes()
        } else if let Some(a) = pair.strip_prefix(b"Action=") {
            sts::ACTIONS.iter().any(|x| x.as_bytes() == a)
        } else {
            false
        }
    })
}

fn malformed_query(e: keyward_protocol::query::FormError) -> ApiError {
    ApiError::new(400, "MalformedQueryString", e.to_string())
}

fn is_form(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(ct) => is_form_type(ct.trim_start()),
    }
}

/// Whether a `Content-Type` value starts with the form type, in any case (without a lowercase copy).
fn is_form_type(ct: &str) -> bool {
    const FORM: &[u8] = b"application/x-www-form-urlencoded";
    ct.as_bytes()
        .get(..FORM.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(FORM))
}

/// The dialect of a request that carries no (parsable) credential scope: query-protocol requests have
/// an `Action` or a form body; everything else is S3.
fn guess_dialect(method: &Method, query: &str, headers: &HeaderMap) -> Dialect {
    if headers.contains_key(&X_AMZ_TARGET) {
        return Dialect::Json;
    }
    let has_action = query.split('&').any(|kv| kv.starts_with("Action="));
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_form_type);
    if has_action || (method == Method::POST && form) {
        Dialect::Iam
    } else {
        Dialect::S3
    }
}

fn plain(status: StatusCode, ct: &'static str, body: Bytes) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

fn response(
    status: StatusCode,
    ct: &'static str,
    rid: String,
    dialect: Dialect,
    body: Bytes,
) -> http::Response<Full<Bytes>> {
    let mut r = plain(status, ct, body);
    // The id's own buffer becomes the header value: no second copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(rid)) {
        if dialect == Dialect::S3 {
            r.headers_mut().insert(X_AMZ_REQUEST_ID, v);
        } else {
            r.headers_mut().insert(X_AMZN_REQUEST_ID, v);
        }
    }
    r
}

#[doc(hidden)]
pub use auth::unix_secs;

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent as the given frames, each `Err` a failure of the connection.
    struct Frames(std::collections::VecDeque<Result<Bytes, ()>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|f| {
                f.map(http_body::Frame::data)
                    .map_err(|()| std::io::Error::other("reset"))
            }))
        }
    }

    fn frames(parts: &[&'static str]) -> Frames {
        Frames(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect(),
        )
    }

    fn read(body: Frames, limit: usize) -> Result<Bytes, BodyError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_body(body, limit))
    }

    #[test]
    fn a_body_is_read_whole_and_one_frame_is_not_copied() {
        let one = Bytes::from_static(b"Action=GetCallerIdentity");
        let got = read(Frames([Ok(one.clone())].into()), 100).unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr(), "one frame is returned as is");
        assert_eq!(
            read(frames(&["Act", "ion=", "X"]), 100).unwrap(),
            "Action=X"
        );
        assert_eq!(read(frames(&[]), 100).unwrap(), "");
        assert_eq!(read(frames(&["ab", "cd"]), 4).unwrap(), "abcd");
    }

    #[test]
    fn a_body_over_the_limit_or_cut_short_is_refused() {
        assert_eq!(read(frames(&["ab", "cde"]), 4), Err(BodyError::TooLarge));
        assert_eq!(read(frames(&["abcde"]), 4), Err(BodyError::TooLarge));
        let cut = Frames([Ok(Bytes::from_static(b"ab")), Err(())].into());
        assert_eq!(read(cut, 100), Err(BodyError::Incomplete));
    }

    #[test]
    fn form_content_type_is_matched_in_any_case() {
        assert!(is_form_type("application/x-www-form-urlencoded"));
        assert!(is_form_type(
            "Application/X-WWW-Form-URLEncoded; charset=utf-8"
        ));
        assert!(!is_form_type("application/x-www-form"));
        assert!(!is_form_type("application/json"));
        assert!(!is_form_type("ä"));
        let mut h = HeaderMap::new();
        assert!(is_form(&h), "no content type: a form");
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("  APPLICATION/x-www-form-urlencoded"),
        );
        assert!(is_form(&h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_form(&h));
        assert_eq!(guess_dialect(&Method::POST, "", &h), Dialect::S3);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/X-Www-Form-Urlencoded"),
        );
        assert_eq!(guess_dialect(&Method::POST, "", &h), Dialect::Iam);
    }

    #[test]
    fn request_id_headers_are_named_as_aws_names_them() {
        let r = response(
            StatusCode::OK,
            "text/xml",
            "rid-1".to_owned(),
            Dialect::Sts,
            Bytes::new(),
        );
        assert_eq!(r.headers()["x-amzn-RequestId"], "rid-1");
        let r = response(
            StatusCode::OK,
            "application/xml",
            "rid-2".to_owned(),
            Dialect::S3,
            Bytes::new(),
        );
        assert_eq!(r.headers()["x-amz-request-id"], "rid-2");
        assert!(r.headers().get("x-amzn-RequestId").is_none());
    }
}
