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
pub use key::{SecretKey, Signature, SigningKeyCache, SlottedSecret};
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
///
/// Kept as the one string `date/region/service/aws4_request` that enters the string to sign, with the
/// ends of its parts: a parsed request costs one allocation for its scope, not four.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    /// `date/region/service/aws4_request`.
    full: String,
    /// End of `date` (the `/` after it).
    date_end: usize,
    /// End of `region`.
    region_end: usize,
    /// End of `service`.
    service_end: usize,
}

impl CredentialScope {
    pub(crate) fn new(date: &str, region: &str, service: &str) -> Self {
        const TERMINATOR: &str = "/aws4_request";
        let mut full =
            String::with_capacity(date.len() + region.len() + service.len() + 2 + TERMINATOR.len());
        full.push_str(date);
        let date_end = full.len();
        full.push('/');
        full.push_str(region);
        let region_end = full.len();
        full.push('/');
        full.push_str(service);
        let service_end = full.len();
        full.push_str(TERMINATOR);
        CredentialScope {
            full,
            date_end,
            region_end,
            service_end,
        }
    }
    /// `YYYYMMDD`.
    pub fn date(&self) -> &str {
        &self.full[..self.date_end]
    }
    /// The region the client signed for (clients with a custom endpoint sign with their own region).
    pub fn region(&self) -> &str {
        &self.full[self.date_end + 1..self.region_end]
    }
    /// The service, e.g. `sts`, `iam`, `s3`.
    pub fn service(&self) -> &str {
        &self.full[self.region_end + 1..self.service_end]
    }
    /// `date/region/service/aws4_request`, as in the string to sign.
    pub(crate) fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for CredentialScope {
    /// `date/region/service/aws4_request`, as in the string to sign.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}
