//! Authentication: from a parsed signature to a [`Caller`], or the exact error AWS would answer.
//!
//! Order of checks, as AWS: the key id's kind and session token; the key's existence and state; then
//! the signature, clock and payload, which only [`keyward_sigv4`] can vouch for.

use crate::app::App;
use crate::caller::{user_arn, Caller, CallerRef, Identity};
use crate::keycache::CachedKey;
use crate::session::{self, TokenError};
use keyward_ids::KeyKind;
use keyward_protocol::time::iso8601;
use keyward_protocol::{ApiError, Dialect};
use keyward_sigv4::{
    ParseError, Request, SecretKey, SignedRequest, SlottedSecret, Verified, VerifyError,
};
use keyward_store::KeyStatus;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An authenticated request: who called, and the proof that the signature was checked (which
/// borrows from the parsed authentication `'r`).
#[derive(Debug)]
pub struct Authenticated<'r> {
    /// The caller.
    pub caller: CallerRef,
    /// The verifier's proof (and the chunk decoder of streaming bodies).
    pub verified: Verified<'r>,
    /// This use of a long-term key is to be noted in the store's last uses (see
    /// [`crate::keycache::KeyCache::use_due`]); never for session credentials, whose uses are not tracked.
    pub note_use: bool,
}

/// The error for a request that carries no authentication at all.
pub fn missing_authentication(dialect: Dialect) -> ApiError {
    match dialect {
        Dialect::S3 => ApiError::s3_access_denied(),
        Dialect::Json => ApiError::new(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        _ => ApiError::missing_authentication_token(),
    }
}

/// The error for a malformed signature; `authorization` is the request's `Authorization` header,
/// which S3 quotes back in some errors.
pub fn malformed(dialect: Dialect, e: &ParseError, authorization: Option<&str>) -> ApiError {
    match (dialect, e) {
        (Dialect::S3, _) => s3_malformed(e, authorization),
        // The credential scope is checked with the signature: IAM's troubleshooting guide shows
        // "Date in Credential scope does not match ..." as a signature verification failure.
        (_, ParseError::CredentialDateMismatch { .. } | ParseError::InvalidTerminator { .. }) => {
            ApiError::new(403, "SignatureDoesNotMatch", e.message())
        }
        _ => ApiError::new(400, "IncompleteSignature", e.message()),
    }
}

/// S3's answers to a malformed signature, in its own codes and words (real S3 responses quoted in
/// public reports and in ceph's s3-tests).
fn s3_malformed(e: &ParseError, authorization: Option<&str>) -> ApiError {
    const NO_DATE: &str = "AWS authentication requires a valid Date or x-amz-date header";
    let header_malformed = |m: &str| {
        ApiError::new(
            400,
            "AuthorizationHeaderMalformed",
            format!("The authorization header is malformed; {m}"),
        )
    };
    match e {
        ParseError::AuthorizationIncomplete { missing, .. } if missing.as_slice() == ["Date"] => {
            ApiError::new(403, "AccessDenied", NO_DATE)
        }
        ParseError::InvalidDate { query: false, .. } => ApiError::new(403, "AccessDenied", NO_DATE),
        ParseError::AuthorizationIncomplete { .. } => header_malformed(
            "the authorization header requires three components: Credential, SignedHeaders, and Signature.",
        ),
        ParseError::MalformedCredential { query: false, .. }
        | ParseError::InvalidTerminator { query: false, .. } => header_malformed(
            "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
        ),
        ParseError::CredentialDateMismatch { query: false, .. } => {
            header_malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
        }
        // SigV2's header scheme, which S3 no longer takes in most regions.
        ParseError::UnsupportedAlgorithm {
            algorithm,
            query: false,
        } if algorithm == "AWS" => ApiError::new(
            400,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ),
        ParseError::UnsupportedAlgorithm { query: false, .. } => {
            ApiError::new(400, "InvalidArgument", "Unsupported Authorization Type")
                .with("ArgumentName", "Authorization")
                .with("ArgumentValue", authorization.unwrap_or_default())
        }
        ParseError::MultipleAuthMechanisms => ApiError::new(400, "InvalidArgument", e.message())
            .with("ArgumentName", "Authorization")
            .with("ArgumentValue", authorization.unwrap_or_default()),
        ParseError::InvalidContentSha256 { value } => {
            ApiError::new(400, "InvalidArgument", e.message())
                .with("ArgumentName", "x-amz-content-sha256")
                .with("ArgumentValue", value.as_str())
        }
        ParseError::MissingContentSha256 => ApiError::new(400, "InvalidRequest", e.message()),
        // A presigned URL that signs no header leaves `host` unsigned.
        ParseError::InvalidSignedHeaders { value, query: true } if value.is_empty() => {
            ApiError::new(
                403,
                "AccessDenied",
                "There were headers present in the request which were not signed",
            )
            .with("HeadersNotSigned", "host")
        }
        _ if e.is_query_auth() => {
            ApiError::new(400, "AuthorizationQueryParametersError", e.message())
        }
        _ => ApiError::new(400, "AuthorizationHeaderMalformed", e.message()),
    }
}

fn unknown_key(dialect: Dialect, key_id: &str) -> ApiError {
    match dialect {
        Dialect::S3 => ApiError::invalid_access_key_id(key_id),
        Dialect::Json => ApiError::new(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        _ => ApiError::invalid_client_token_id(),
    }
}

fn bad_token(dialect: Dialect, token: &str, e: TokenError) -> ApiError {
    match (dialect, e) {
        (Dialect::S3, TokenError::Invalid) => ApiError::new(
            400,
            "InvalidToken",
            "The provided token is malformed or otherwise invalid.",
        )
        .with("Token-0", token),
        (Dialect::S3, TokenError::Expired) => {
            ApiError::new(400, "ExpiredToken", "The provided token has expired.")
                .with("Token-0", token)
        }
        (Dialect::Json, TokenError::Invalid) => ApiError::new(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        (Dialect::Json, TokenError::Expired) => ApiError::new(
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        (_, TokenError::Invalid) => ApiError::invalid_client_token_id(),
        (_, TokenError::Expired) => ApiError::expired_token(),
    }
}

/// Maps a verification failure to the error of `dialect`.
pub fn verify_error(
    dialect: Dialect,
    key_id: &str,
    presign_expires: Option<u32>,
    e: VerifyError,
    now: SystemTime,
) -> ApiError {
    if dialect == Dialect::Json {
        return ApiError::new(400, "InvalidSignatureException", e.message());
    }
    let s3 = dialect == Dialect::S3;
    match e {
        VerifyError::SignatureDoesNotMatch {
            canonical_request,
            string_to_sign,
            signature_provided,
        } => {
            if s3 {
                ApiError::s3_signature_does_not_match(
                    key_id,
                    &string_to_sign,
                    &signature_provided,
                    &canonical_request,
                )
            } else {
                ApiError::signature_does_not_match()
            }
        }
        e @ VerifyError::TooSkewed { .. } => {
            if s3 {
                let request_time = match &e {
                    VerifyError::TooSkewed { request_time, .. } => request_time.clone(),
                    _ => String::new(),
                };
                ApiError::new(
                    403,
                    "RequestTimeTooSkewed",
                    "The difference between the request time and the current time is too large.",
                )
                .with("RequestTime", request_time)
                .with("ServerTime", iso8601(now))
                .with("MaxAllowedSkewMilliseconds", "900000")
            } else {
                ApiError::new(403, "SignatureDoesNotMatch", e.message())
            }
        }
        VerifyError::PresignedExpired {
            request_time: _,
            expired_at,
            server_time,
        } if s3 => {
            let mut e = ApiError::new(403, "AccessDenied", "Request has expired");
            // SigV4 names its X-Amz-Expires; SigV2's expiry body has only Expires and ServerTime.
            if let Some(secs) = presign_expires {
                e = e.with("X-Amz-Expires", secs.to_string());
            }
            e.with("Expires", iso8601(expired_at))
                .with("ServerTime", iso8601(server_time))
        }
        VerifyError::HeadersNotSigned(headers) if s3 => ApiError::new(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
        )
        .with("HeadersNotSigned", headers),
        VerifyError::ContentSha256Mismatch { client, computed } => {
            if s3 {
                ApiError::new(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
                .with("ClientComputedContentSHA256", client)
                .with("S3ComputedContentSHA256", computed)
            } else {
                ApiError::signature_does_not_match()
            }
        }
        e => {
            if s3 {
                ApiError::new(403, "AccessDenied", e.message())
            } else {
                ApiError::new(403, "SignatureDoesNotMatch", e.message())
            }
        }
    }
}

/// A failed authentication: the error to answer, and whether failed-authentication throttling counts it.
#[derive(Debug)]
pub struct AuthFailure {
    /// The error AWS would answer.
    pub error: ApiError,
    /// Counted by the throttle: the request did not prove possession of a valid secret (unknown or
    /// inactive key, bad session token, wrong signature, unsigned `host`...). Failures that come after
    /// a matching signature (clock skew, expired presigned URL, payload hash mismatch) are an honest
    /// client's mistakes and do not count, nor do store failures (5xx).
    pub counts: bool,
    /// The owner of the presented long-term key, when the key exists (inactive key, wrong
    /// signature): whose key was used, for the audit trail.
    pub owner: Option<CallerRef>,
}

impl From<ApiError> for AuthFailure {
    fn from(error: ApiError) -> Self {
        let counts = error.status < 500;
        Self {
            error,
            counts,
            owner: None,
        }
    }
}

/// Whether a verification failure happened after the signature matched (so the caller holds the
/// secret, and the failure is no guess).
pub fn proves_secret(e: &VerifyError) -> bool {
    matches!(
        e,
        VerifyError::TooSkewed { .. }
            | VerifyError::PresignedExpired { .. }
            | VerifyError::PresignedNotYetValid { .. }
            | VerifyError::ContentSha256Mismatch { .. }
    )
}

/// The service and region a signature is scoped to (SigV2 presigned URLs are S3's, in us-east-1).
pub fn service_region(parsed: &SignedRequest) -> (&str, &str) {
    match parsed {
        SignedRequest::V4(a) => (a.scope().service(), a.scope().region()),
        SignedRequest::V2Presigned(_) => ("s3", "us-east-1"),
    }
}

/// One signature to authenticate: the request it was found on, its parsed form, the dialect of
/// the answer and the time. [`Check::cached`] answers the common case without suspending;
/// [`Check::authenticate`] answers every case.
#[derive(Clone, Copy)]
pub struct Check<'r> {
    /// The application (its caches and store).
    pub app: &'r App,
    /// The request the signature was found on.
    pub req: &'r Request<'r>,
    /// The request's body.
    pub body: &'r [u8],
    /// The signature.
    pub parsed: &'r SignedRequest,
    /// How errors are spoken.
    pub dialect: Dialect,
    /// The server's time.
    pub now: SystemTime,
}

impl<'r> Check<'r> {
    fn key_id(&self) -> &str {
        match self.parsed {
            SignedRequest::V4(a) => a.access_key_id(),
            SignedRequest::V2Presigned(a) => a.access_key_id(),
        }
    }

    fn token(&self) -> Option<&str> {
        match self.parsed {
            SignedRequest::V4(a) => a.session_token(),
            SignedRequest::V2Presigned(a) => a.session_token(),
        }
    }

    /// Verifies the signature with a session's secret (`Ok`, through the shared cache of signing
    /// keys) or a long-term key's entry, which keeps its own signing key (`Err`).
    fn verify(
        &self,
        secret: Result<&SecretKey, &SlottedSecret>,
    ) -> Result<Verified<'r>, AuthFailure> {
        let Check {
            app,
            req,
            body,
            parsed,
            dialect,
            now,
        } = *self;
        let r = match (parsed, secret) {
            (SignedRequest::V4(a), Ok(s)) => a.verify(req, body, s, now, Some(app.signing_keys())),
            (SignedRequest::V4(a), Err(s)) => a.verify_slotted(req, body, s, now),
            (SignedRequest::V2Presigned(a), Ok(s)) => a.verify(req, s, now),
            (SignedRequest::V2Presigned(a), Err(s)) => a.verify(req, s.secret(), now),
        };
        let expires = match parsed {
            SignedRequest::V4(a) => a.expires_secs(),
            SignedRequest::V2Presigned(_) => None,
        };
        r.map_err(|e| AuthFailure {
            counts: !proves_secret(&e),
            error: verify_error(dialect, self.key_id(), expires, e, now),
            owner: None,
        })
    }

    /// Authenticates with a long-term key's entry.
    fn with_entry(&self, entry: &Arc<CachedKey>) -> Result<Authenticated<'r>, AuthFailure> {
        let owner = || CallerRef::Key(Arc::clone(entry));
        let refuse = |error: ApiError| AuthFailure {
            owner: Some(owner()),
            ..AuthFailure::from(error)
        };
        if entry.status != KeyStatus::Active {
            return Err(refuse(unknown_key(self.dialect, self.key_id())));
        }
        if let Some(token) = self.token() {
            // A session token next to a long-term key: AWS refuses the pair.
            return Err(refuse(bad_token(self.dialect, token, TokenError::Invalid)));
        }
        let verified = self.verify(Err(&entry.secret)).map_err(|f| AuthFailure {
            owner: Some(owner()),
            ..f
        })?;
        let (service, region) = service_region(self.parsed);
        Ok(Authenticated {
            caller: owner(),
            verified,
            note_use: self
                .app
                .key_cache()
                .use_due(entry, self.now, service, region),
        })
    }

    /// [`Check::authenticate`] for the common case, without suspending: a long-term key found in
    /// the verification cache. `None` when the store or a session's user must be consulted.
    pub fn cached(&self) -> Option<Result<Authenticated<'r>, AuthFailure>> {
        let key_id = self.key_id();
        if keyward_ids::key_kind(key_id) == Some(KeyKind::Temporary) {
            return None;
        }
        let entry = cached_key(self.app, key_id)?;
        Some(self.with_entry(&entry))
    }

    /// Authenticates the signature; a failure tells whether failed-authentication throttling
    /// counts it, and whose key it was.
    pub async fn authenticate(&self) -> Result<Authenticated<'r>, AuthFailure> {
        let Check {
            app, dialect, now, ..
        } = *self;
        let key_id = self.key_id();
        if keyward_ids::key_kind(key_id) == Some(KeyKind::Temporary) {
            let Some(token) = self.token() else {
                return Err(unknown_key(dialect, key_id).into());
            };
            let claims = session::open(app.session_sealer(), token, key_id, now)
                .map_err(|e| AuthFailure::from(bad_token(dialect, token, e)))?;
            let verified = self.verify(Ok(&claims.secret))?;
            let identity = match &claims.user {
                None => Identity::Root,
                Some((_, user_id)) => {
                    // A session belongs to its user's unique id, as in IAM: it follows a rename,
                    // and ends with its user (a deleted user's sessions are refused, even once a
                    // new user takes the name).
                    session_user(app, &claims.account_id, user_id)
                        .await?
                        .ok_or_else(ApiError::invalid_client_token_id)?
                }
            };
            let caller = Caller::new(&claims.account_id, &identity, key_id, Some(claims.expires));
            return Ok(Authenticated {
                caller: CallerRef::Own(Arc::new(caller)),
                verified,
                note_use: false,
            });
        }

        let Some(entry) = lookup_key(app, key_id).await? else {
            return Err(unknown_key(dialect, key_id).into());
        };
        self.with_entry(&entry)
    }
}

/// The fresh cache entry of `key_id`, counted as a hit; a miss is counted by [`lookup_key`].
fn cached_key(app: &App, key_id: &str) -> Option<Arc<CachedKey>> {
    let e = app.key_cache().get(key_id)?;
    app.metrics()
        .key_cache_hits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(e)
}

/// The verification entry of a long-term key, from the cache or the store.
pub async fn lookup_key(app: &App, key_id: &str) -> Result<Option<Arc<CachedKey>>, ApiError> {
    if let Some(e) = cached_key(app, key_id) {
        return Ok(Some(e));
    }
    app.metrics()
        .key_cache_misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !keyward_ids::is_well_formed_key_id(key_id) {
        return Ok(None);
    }
    let ticket = app.key_cache().ticket();
    let Some((key, secret, owner)) = app
        .store()
        .get_access_key_with_owner(key_id)
        .await
        .map_err(|e| app.store_error(e))?
    else {
        return Ok(None);
    };
    let Some(entry) = cached_entry(key, &secret, owner) else {
        return Ok(None);
    };
    if entry.status != KeyStatus::Active {
        // Refused keys are not cached: a key made active again (here or on another node) works at
        // once, without waiting for the entry to expire or for the other node's notification.
        return Ok(Some(Arc::new(entry)));
    }
    Ok(Some(app.key_cache().insert(ticket, entry)))
}

/// The verification entry of a key read from the store; `None` for a user's key whose user row is
/// gone (no identity to act as).
pub fn cached_entry(
    key: keyward_store::AccessKey,
    secret: &keyward_store::Secret,
    owner: Option<keyward_store::KeyOwner>,
) -> Option<CachedKey> {
    let identity = match (&key.user_name, owner) {
        (None, _) => Identity::Root,
        (Some(name), Some(owner)) => Identity::User {
            arn: user_arn(&key.account_id, &owner.path, name),
            name: name.clone(),
            user_id: owner.user_id,
        },
        (Some(_), None) => return None,
    };
    Some(CachedKey::new(key, secret, identity))
}

/// Refreshes the cache entries of keys in use that are close to expiring
/// ([`crate::keycache::KeyCache::take_refresh`]), so a key in steady use never waits for the
/// store. When the store's change stamp shows nothing committed since an entry was read, the entry
/// is renewed in place ([`crate::keycache::KeyCache::renew`]); the others are re-read in one store
/// round trip, and a key found changed (inactive, deleted, its user gone) is evicted. Returns how
/// many keys were due (0: none).
pub async fn refresh_keys(app: &App) -> Result<usize, keyward_store::StoreError> {
    let due = app.key_cache().take_refresh();
    if due.is_empty() {
        return Ok(0);
    }
    let n = due.len();
    let before_stamp = app.key_cache().ticket();
    let stamp = app.store().change_stamp().await?;
    let current_since = app.key_cache().stamp_seen(stamp);
    let ids = app.key_cache().renew(due, current_since, before_stamp);
    if ids.is_empty() {
        return Ok(n);
    }
    // Taken after the stamp was read: what is read now counts as read after it.
    let ticket = app.key_cache().ticket();
    let found = app.store().get_access_keys_with_owner(&ids).await?;
    let mut fresh = std::collections::HashSet::with_capacity(found.len());
    for (key, secret, owner) in found {
        let id = key.key_id.clone();
        match cached_entry(key, &secret, owner) {
            Some(e) if e.status == KeyStatus::Active => {
                app.key_cache().insert(ticket, e);
                fresh.insert(id);
            }
            _ => {}
        }
    }
    for id in ids.iter().filter(|id| !fresh.contains(*id)) {
        app.key_cache().evict(id);
    }
    Ok(n)
}

/// The identity of the IAM user behind session credentials (by its unique id), from the cache or
/// the store; `None` if the user no longer exists.
async fn session_user(
    app: &App,
    account_id: &str,
    user_id: &str,
) -> Result<Option<Identity>, ApiError> {
    if let Some(identity) = app.key_cache().get_user(account_id, user_id) {
        return Ok(Some(identity));
    }
    let ticket = app.key_cache().ticket();
    let Some(user) = app
        .store()
        .get_user_by_id(account_id, user_id)
        .await
        .map_err(|e| app.store_error(e))?
    else {
        return Ok(None);
    };
    let identity = Identity::User {
        arn: user_arn(account_id, &user.path, &user.name),
        name: user.name,
        user_id: user.user_id,
    };
    app.key_cache()
        .insert_user(ticket, account_id, user_id, identity.clone());
    Ok(Some(identity))
}

/// Seconds since the epoch, for logs.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;
    use keyward_store::{MasterKey, Store};

    /// A key in steady use is read again before its entry expires (so it never waits for the
    /// store), and a change made elsewhere (no eviction reached this server) is seen by that read.
    #[tokio::test]
    async fn keys_in_use_are_refreshed_and_changes_made_elsewhere_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let sealer = master.sealer("test/sessions");
        let store = Store::open_sqlite(&dir.path().join("keyward.db"), master)
            .await
            .unwrap();
        let account = store.create_account("refresh", None).await.unwrap();
        store
            .create_user(&account.id, "ann", "/", &[])
            .await
            .unwrap();
        let (key, _) = store
            .create_access_key(&account.id, Some("ann"))
            .await
            .unwrap();
        let config = AppConfig {
            key_cache_ttl: Duration::from_millis(1000),
            ..AppConfig::default()
        };
        let app = App::new(store.clone(), sealer, config);
        let first = lookup_key(&app, &key.key_id).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Used late in its life: answered from the cache, and re-read by the refresh.
        let same = lookup_key(&app, &key.key_id).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        assert_eq!(refresh_keys(&app).await.unwrap(), 1);
        let refreshed = app.key_cache().get(&key.key_id).expect("still cached");
        assert!(!Arc::ptr_eq(&first, &refreshed), "a new entry");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            app.key_cache().get(&key.key_id).is_some(),
            "the new entry lives on"
        );
        // Nothing was committed since it was read: renewed in place, not read again.
        assert_eq!(refresh_keys(&app).await.unwrap(), 1);
        let renewed = app.key_cache().get(&key.key_id).expect("still cached");
        assert!(Arc::ptr_eq(&refreshed, &renewed), "the same entry");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            app.key_cache().get(&key.key_id).is_some(),
            "the renewed entry lives on"
        );
        // Deactivated by someone else (the store directly: no eviction here), then refreshed.
        store
            .update_access_key_status(&account.id, Some("ann"), &key.key_id, KeyStatus::Inactive)
            .await
            .unwrap();
        refresh_keys(&app).await.unwrap();
        assert!(app.key_cache().get(&key.key_id).is_none(), "evicted");
        let now = lookup_key(&app, &key.key_id).await.unwrap().unwrap();
        assert_eq!(now.status, KeyStatus::Inactive);
        let misses = app
            .metrics()
            .key_cache_misses
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(misses, 2, "the first lookup and the one after the change");
    }
}
