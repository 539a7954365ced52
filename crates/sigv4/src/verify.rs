//! Verification of a parsed [`V4Auth`] or [`V2Auth`] against a secret the caller looked up.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::canonical::{
    canonical_request, percent_decode, sha256_hex, sha256_hex_in, split_ascii, string_to_sign,
    CanonicalParts, PathMode,
};
use crate::chunked::{ChunkDecoder, StreamingState};
use crate::key::{Signature, SigningKey, SigningKeyCache, SlottedSecret};
use crate::parse::{PayloadMode, V2Auth, V4Auth};
use crate::time::format_amz_date;
use crate::{CredentialScope, Request, SecretKey};

/// Clock skew AWS allows between the request time and the server's, each way.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a parsed request failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature differs from the one the server computed. Carries what AWS shows the client for
    /// debugging; never the secret or the derived key.
    SignatureDoesNotMatch {
        /// The canonical request the server computed (SigV2: empty).
        canonical_request: String,
        /// The string to sign the server computed.
        string_to_sign: String,
        /// The signature the client sent.
        signature_provided: String,
    },
    /// A header-signed request's time is more than 15 minutes from `now`.
    TooSkewed {
        /// The request time as sent (`X-Amz-Date`, or `Date` converted to that form).
        request_time: String,
        /// The `now` passed to the verifier.
        server_time: SystemTime,
        /// Whether the request time is in the future.
        future: bool,
    },
    /// A presigned URL used after its expiry.
    PresignedExpired {
        /// `X-Amz-Date` (SigV4) or `Expires` (SigV2) as sent.
        request_time: String,
        /// When the URL stopped being valid.
        expired_at: SystemTime,
        /// The `now` passed to the verifier.
        server_time: SystemTime,
    },
    /// A presigned URL dated more than 15 minutes in the future.
    PresignedNotYetValid {
        /// `X-Amz-Date` as sent.
        request_time: String,
        /// The `now` passed to the verifier.
        server_time: SystemTime,
    },
    /// `x-amz-content-sha256` differs from the SHA-256 of the body received.
    ContentSha256Mismatch {
        /// The value the client sent.
        client: String,
        /// The SHA-256 of the body the server received.
        computed: String,
    },
    /// `host` is not among the signed headers.
    HostNotSigned,
    /// S3: headers the request carries unsigned that S3 requires signed (`host`, any `x-amz-*`),
    /// lowercase, joined by `, ` in the order received.
    HeadersNotSigned(String),
    /// A header named in `SignedHeaders` is not in the request.
    SignedHeaderMissing(String),
}

fn minus_15(t: SystemTime) -> SystemTime {
    t.checked_sub(MAX_SKEW).unwrap_or(UNIX_EPOCH)
}

fn plus(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

impl VerifyError {
    /// The message AWS gives the client (IAM/STS wording; S3 uses its own codes for some, see the docs).
    pub fn message(&self) -> String {
        match self {
            VerifyError::SignatureDoesNotMatch { .. } => "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".to_owned(),
            VerifyError::TooSkewed { request_time, server_time, future: false } => format!(
                "Signature expired: {request_time} is now earlier than {} ({} - 15 min.)",
                format_amz_date(minus_15(*server_time)),
                format_amz_date(*server_time)
            ),
            VerifyError::TooSkewed { request_time, server_time, future: true } => format!(
                "Signature not yet current: {request_time} is still later than {} ({} + 15 min.)",
                format_amz_date(plus(*server_time, MAX_SKEW)),
                format_amz_date(*server_time)
            ),
            VerifyError::PresignedExpired { .. } => "Request has expired".to_owned(),
            VerifyError::PresignedNotYetValid { .. } => "Request is not valid yet".to_owned(),
            VerifyError::ContentSha256Mismatch { .. } => {
                "The provided 'x-amz-content-sha256' header does not match what was computed.".to_owned()
            }
            VerifyError::HostNotSigned => {
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned()
            }
            VerifyError::HeadersNotSigned(_) => {
                "There were headers present in the request which were not signed".to_owned()
            }
            VerifyError::SignedHeaderMissing(name) => {
                format!("The request does not carry the header '{name}' listed in SignedHeaders.")
            }
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for VerifyError {}

/// Proof that a request's signature was verified. Only this crate constructs it, so code that needs an
/// authenticated identity cannot skip verification:
///
/// ```compile_fail
/// // Private fields: no way to make one outside keyward-sigv4.
/// let v = keyward_sigv4::Verified { access_key_id: "AKID", scope: None, session_token: None, streaming: None };
/// ```
///
/// It borrows what it tells from the parsed authentication it proves, so a verification copies
/// nothing.
pub struct Verified<'a> {
    access_key_id: &'a str,
    scope: Option<&'a CredentialScope>,
    session_token: Option<&'a str>,
    streaming: Option<StreamingState>,
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("access_key_id", &self.access_key_id)
            .field("scope", &self.scope)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<present>"),
            )
            .field("streaming", &self.streaming.is_some())
            .finish()
    }
}

impl<'a> Verified<'a> {
    /// The authenticated access key id.
    pub fn access_key_id(&self) -> &'a str {
        self.access_key_id
    }
    /// The credential scope (SigV4 only).
    pub fn scope(&self) -> Option<&'a CredentialScope> {
        self.scope
    }
    /// The session token the request carried (the caller checks it belongs to the key).
    pub fn session_token(&self) -> Option<&'a str> {
        self.session_token
    }
    /// A decoder for the aws-chunked body, for the `STREAMING-*` payload modes; `None` otherwise.
    pub fn chunk_decoder(&self) -> Option<ChunkDecoder> {
        self.streaming.clone().map(ChunkDecoder::new)
    }
}

/// Where [`V4Auth::verify_from`] gets the signing key.
enum KeySource<'a> {
    /// Derived from the secret, through a shared cache if any.
    Secret(&'a SecretKey, Option<&'a SigningKeyCache>),
    /// The secret's own slot.
    Slotted(&'a SlottedSecret),
}

impl V4Auth {
    /// Verifies the request against the secret the caller looked up for [`V4Auth::access_key_id`].
    ///
    /// `body` is the full body for non-streaming requests; for the `STREAMING-*` payload modes pass `&[]`
    /// and decode the body with [`Verified::chunk_decoder`]. `now` is the server's time. With a `cache`,
    /// a warm key costs two HMACs instead of six.
    ///
    /// Order of checks: `host` signed, the signature, the payload hash, then the time (so time errors are
    /// only reported to holders of the secret).
    pub fn verify(
        &self,
        req: &Request<'_>,
        body: &[u8],
        secret: &SecretKey,
        now: SystemTime,
        cache: Option<&SigningKeyCache>,
    ) -> Result<Verified<'_>, VerifyError> {
        self.verify_from(req, body, now, KeySource::Secret(secret, cache))
    }

    /// [`V4Auth::verify`] against a secret that keeps its own last derived signing key: a warm
    /// key then costs two HMACs and no lookup in a shared cache.
    pub fn verify_slotted(
        &self,
        req: &Request<'_>,
        body: &[u8],
        secret: &SlottedSecret,
        now: SystemTime,
    ) -> Result<Verified<'_>, VerifyError> {
        self.verify_from(req, body, now, KeySource::Slotted(secret))
    }

    fn verify_from(
        &self,
        req: &Request<'_>,
        body: &[u8],
        now: SystemTime,
        source: KeySource<'_>,
    ) -> Result<Verified<'_>, VerifyError> {
        let signed = |name: &str| split_ascii(&self.signed_headers, b';').any(|h| h == name);
        if self.scope.service() == "s3" {
            // S3 refuses a request that carries `host` or any `x-amz-*` header unsigned, and
            // names them (`HeadersNotSigned`), for header and query authentication alike.
            let mut unsigned = String::new();
            let amz = req
                .headers
                .keys()
                .map(|n| n.as_str())
                .filter(|n| n.starts_with("x-amz-"));
            for name in std::iter::once("host").chain(amz) {
                if !signed(name) && !unsigned.split(", ").any(|u| u == name) {
                    if !unsigned.is_empty() {
                        unsigned.push_str(", ");
                    }
                    unsigned.push_str(name);
                }
            }
            if !unsigned.is_empty() {
                return Err(VerifyError::HeadersNotSigned(unsigned));
            }
        } else if !signed("host") {
            return Err(VerifyError::HostNotSigned);
        }
        let mut computed_body_hash = [0; 64];
        let payload_hash = match self.payload_mode.literal() {
            Some(p) => p,
            None => sha256_hex_in(body, &mut computed_body_hash),
        };
        let canonical = canonical_request(&CanonicalParts {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.headers,
            signed_headers: &self.signed_headers,
            path_mode: PathMode::for_service(self.scope.service()),
            presigned: self.is_presigned(),
            payload_hash,
        })
        .map_err(VerifyError::SignedHeaderMissing)?;
        let sts = string_to_sign(&self.amz_date, self.scope.as_str(), &canonical);
        let (date, region, service) =
            (self.scope.date(), self.scope.region(), self.scope.service());
        let key = match source {
            KeySource::Secret(secret, Some(c)) => {
                c.get_or_derive(&self.access_key_id, secret, date, region, service)
            }
            KeySource::Secret(secret, None) => SigningKey::derive(secret, date, region, service),
            KeySource::Slotted(s) => s.signing_key(self.scope.as_str(), date, region, service),
        };
        let computed = Signature::new(key.sign(sts.as_bytes()));
        if !computed.ct_eq(&self.signature) {
            return Err(VerifyError::SignatureDoesNotMatch {
                canonical_request: String::from_utf8_lossy(&canonical).into_owned(),
                string_to_sign: sts,
                signature_provided: self.signature.as_str().to_owned(),
            });
        }
        if let PayloadMode::Hex(declared) = &self.payload_mode {
            let actual = sha256_hex(body);
            if !Signature::new(actual.as_str()).ct_eq(&Signature::new(declared.as_str())) {
                return Err(VerifyError::ContentSha256Mismatch {
                    client: declared.clone(),
                    computed: actual,
                });
            }
        }
        self.check_time(now)?;
        let streaming = match self.payload_mode {
            PayloadMode::StreamingSigned { .. } | PayloadMode::StreamingUnsignedTrailer => {
                Some(StreamingState {
                    key: key.clone(),
                    seed: computed.as_str().to_owned(),
                    amz_date: self.amz_date.clone(),
                    scope: self.scope.as_str().to_owned(),
                    mode: self.payload_mode.clone(),
                    decoded_length: req
                        .headers
                        .get("x-amz-decoded-content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                    trailer_name: req
                        .headers
                        .get("x-amz-trailer")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                })
            }
            _ => None,
        };
        Ok(Verified {
            access_key_id: &self.access_key_id,
            scope: Some(&self.scope),
            session_token: self.session_token.as_deref(),
            streaming,
        })
    }

    fn check_time(&self, now: SystemTime) -> Result<(), VerifyError> {
        // Only S3 honours X-Amz-Expires; every other service holds a presigned request to the
        // 15-minute window of a signed header, whatever it asks for (STS serves a presigned
        // GetCallerIdentity for about 15 minutes whether X-Amz-Expires says 0, 60 or 3600).
        let expires = self.expires.filter(|_| self.scope.service() == "s3");
        match expires {
            None => {
                if now > plus(self.time, MAX_SKEW) {
                    return Err(VerifyError::TooSkewed {
                        request_time: self.amz_date.clone(),
                        server_time: now,
                        future: false,
                    });
                }
                if self.time > plus(now, MAX_SKEW) {
                    return Err(VerifyError::TooSkewed {
                        request_time: self.amz_date.clone(),
                        server_time: now,
                        future: true,
                    });
                }
            }
            Some(expires) => {
                if self.time > plus(now, MAX_SKEW) {
                    return Err(VerifyError::PresignedNotYetValid {
                        request_time: self.amz_date.clone(),
                        server_time: now,
                    });
                }
                let expired_at = plus(self.time, Duration::from_secs(u64::from(expires)));
                if now > expired_at {
                    return Err(VerifyError::PresignedExpired {
                        request_time: self.amz_date.clone(),
                        expired_at,
                        server_time: now,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Query parameters that belong to S3's SigV2 canonicalized resource (botocore's list).
const V2_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// The S3 SigV2 string to sign for query authentication: method, `Content-MD5`, `Content-Type`,
/// `Expires`, the `x-amz-*` headers (and `x-amz-*` query parameters, where botocore moves them), and the
/// canonicalized resource (the path as sent plus the sub-resources).
pub(crate) fn v2_string_to_sign(req: &Request<'_>, expires: &str) -> String {
    let mut amz: Vec<(String, String)> = Vec::new();
    let (mut md5, mut ctype) = (None, None);
    for (name, value) in req.headers {
        let n = name.as_str();
        let v = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
        if n.starts_with("x-amz-") {
            amz.push((n.to_owned(), v));
        } else if n == "content-md5" && md5.is_none() {
            md5 = Some(v);
        } else if n == "content-type" && ctype.is_none() {
            ctype = Some(v);
        }
    }
    let mut subresources: Vec<(String, Option<String>)> = Vec::new();
    for piece in req.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v, has_value) = match piece.split_once('=') {
            Some((k, v)) => (k, v, true),
            None => (piece, "", false),
        };
        let key = String::from_utf8_lossy(&percent_decode(k.as_bytes(), true)).into_owned();
        let lower = key.to_ascii_lowercase();
        let value = String::from_utf8_lossy(&percent_decode(v.as_bytes(), true)).into_owned();
        if lower.starts_with("x-amz-") {
            amz.push((lower, value));
        } else if lower == "content-md5" && md5.is_none() {
            md5 = Some(value);
        } else if lower == "content-type" && ctype.is_none() {
            ctype = Some(value);
        } else if V2_SUBRESOURCES.contains(&key.as_str()) {
            subresources.push((key, has_value.then_some(value)));
        }
    }
    // Stable sort by name; values of a repeated name are joined with ',' in order.
    amz.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::new();
    s.push_str(req.method);
    s.push('\n');
    s.push_str(md5.as_deref().unwrap_or(""));
    s.push('\n');
    s.push_str(ctype.as_deref().unwrap_or(""));
    s.push('\n');
    s.push_str(expires);
    s.push('\n');
    let mut i = 0;
    while i < amz.len() {
        let name = &amz[i].0;
        s.push_str(name);
        s.push(':');
        let mut j = i;
        while j < amz.len() && amz[j].0 == *name {
            if j > i {
                s.push(',');
            }
            s.push_str(&amz[j].1);
            j += 1;
        }
        s.push('\n');
        i = j;
    }
    s.push_str(if req.path.is_empty() { "/" } else { req.path });
    subresources.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (k, v)) in subresources.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// Base64 HMAC-SHA1, the SigV2 signature.
pub(crate) fn v2_sign(secret: &SecretKey, string_to_sign: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl V2Auth {
    /// Verifies an S3 SigV2 presigned URL (path-style: `req.path` must start with the bucket) and that
    /// `Expires` has not passed at `now`.
    pub fn verify(
        &self,
        req: &Request<'_>,
        secret: &SecretKey,
        now: SystemTime,
    ) -> Result<Verified<'_>, VerifyError> {
        let sts = v2_string_to_sign(req, &self.expires_raw);
        let computed = Signature::new(v2_sign(secret, &sts));
        if !computed.ct_eq(&self.signature) {
            return Err(VerifyError::SignatureDoesNotMatch {
                canonical_request: String::new(),
                string_to_sign: sts,
                signature_provided: self.signature.as_str().to_owned(),
            });
        }
        let expired_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(self.expires))
            .unwrap_or(UNIX_EPOCH);
        if now > expired_at {
            return Err(VerifyError::PresignedExpired {
                request_time: self.expires_raw.clone(),
                expired_at,
                server_time: now,
            });
        }
        Ok(Verified {
            access_key_id: &self.access_key_id,
            scope: None,
            session_token: self.session_token.as_deref(),
            streaming: None,
        })
    }
}
