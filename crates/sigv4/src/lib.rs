//! Pure AWS Signature Version 4 for keyward: parse a received request's authentication, verify it
//! against a secret the caller looked up, and sign requests with the same canonicalization.
//!
//! No I/O, no async, no clock: the current time is a parameter. The flow on a server:
//!
//! ```
//! # use keyward_sigv4::*;
//! # fn lookup(_: &str) -> Option<SecretKey> { None }
//! # fn handle(req: &Request<'_>, body: &[u8], now: std::time::SystemTime, cache: &SigningKeyCache) -> Result<(), String> {
//! let Some(auth) = parse(req).map_err(|e| e.message())? else { return Err("MissingAuthenticationToken".into()) };
//! let secret = lookup(auth.access_key_id()).ok_or("InvalidClientTokenId")?;
//! let verified: Verified = match &auth {
//!     SignedRequest::V4(v4) => v4.verify(req, body, &secret, now, Some(cache)),
//!     SignedRequest::V2Presigned(v2) => v2.verify(req, &secret, now),
//! }
//! .map_err(|e| e.message())?;
//! // only now is verified.access_key_id() authenticated
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod canonical;
mod chunked;
mod key;
mod parse;
pub mod sign;
mod time;
mod verify;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod suite_tests;

use std::fmt;

pub use chunked::{ChunkDecoder, ChunkError, DEFAULT_MAX_CHUNK_SIZE};
pub use key::{SecretKey, Signature, SigningKeyCache};
pub use parse::{
    parse, ParseError, PayloadMode, SignedRequest, V2Auth, V4Auth, MAX_PRESIGNED_EXPIRES,
};
pub use time::{format_amz_date, format_iso8601, parse_amz_date, parse_http_date};
pub use verify::{Verified, VerifyError, MAX_SKEW};

/// A request as received, borrowed from the server's request type.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The raw path exactly as on the wire (still percent-encoded), without the query.
    pub path: &'a str,
    /// The raw query string without `?`; may be empty.
    pub query: &'a str,
    /// The headers, repeated ones in received order. `host` must be there (for HTTP/2, from `:authority`)
    /// with the value the client sent, port included.
    pub headers: &'a http::HeaderMap,
}

/// The credential scope `date/region/service` of a SigV4 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    date: String,
    region: String,
    service: String,
}

impl CredentialScope {
    pub(crate) fn new(date: &str, region: &str, service: &str) -> Self {
        CredentialScope {
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        }
    }
    /// `YYYYMMDD`.
    pub fn date(&self) -> &str {
        &self.date
    }
    /// The region the client signed for (clients with a custom endpoint sign with their own region).
    pub fn region(&self) -> &str {
        &self.region
    }
    /// The service, e.g. `sts`, `iam`, `s3`.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for CredentialScope {
    /// `date/region/service/aws4_request`, as in the string to sign.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}
