//! Parsing a received request into a [`SignedRequest`]: the SigV4 `Authorization` header, SigV4
//! presigned query parameters, and S3 SigV2 presigned query parameters.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use http::header::{HeaderName, AUTHORIZATION, DATE};
use sha2::{Digest, Sha256};

use crate::canonical::{
    percent_decode, split_ascii, split_once_ascii, split_query, ALGORITHM, ALGORITHM_V4A,
    X_AMZ_CONTENT_SHA256, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN,
};
use crate::key::Signature;
use crate::time::{parse_amz_date, parse_http_date};
use crate::{CredentialScope, Request};

/// Longest `X-Amz-Expires` AWS accepts: seven days.
pub const MAX_PRESIGNED_EXPIRES: u32 = 604_800;

/// How the payload is covered by the signature (from `x-amz-content-sha256`, the service, and the form).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadMode {
    /// `x-amz-content-sha256` carries this lowercase hex SHA-256; it is signed in place of the body and
    /// must equal the SHA-256 of the body received.
    Hex(String),
    /// No declared hash: the verifier hashes the body itself (services other than S3, header or presigned;
    /// for a presigned GET the body is empty).
    Computed,
    /// `UNSIGNED-PAYLOAD`: the body is not covered (S3 only; every S3 presigned URL).
    Unsigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (`trailer: false`) or `...-PAYLOAD-TRAILER` (`trailer: true`):
    /// an aws-chunked body whose chunks are signed in a chain from the seed signature.
    StreamingSigned {
        /// Whether signed trailing headers follow the last chunk.
        trailer: bool,
    },
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an aws-chunked body, unsigned, with a checksum trailer.
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    /// The value that stands for the payload on the last line of the canonical request, when it does not
    /// depend on the body.
    pub(crate) fn literal(&self) -> Option<&str> {
        match self {
            PayloadMode::Hex(h) => Some(h),
            PayloadMode::Computed => None,
            PayloadMode::Unsigned => Some("UNSIGNED-PAYLOAD"),
            PayloadMode::StreamingSigned { trailer: false } => {
                Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            }
            PayloadMode::StreamingSigned { trailer: true } => {
                Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
            }
            PayloadMode::StreamingUnsignedTrailer => Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        }
    }
}

/// A parsed SigV4 authentication (header or presigned), not yet verified.
#[derive(Clone, Debug)]
pub struct V4Auth {
    pub(crate) access_key_id: String,
    pub(crate) scope: CredentialScope,
    pub(crate) signed_headers: String,
    pub(crate) signature: Signature,
    pub(crate) amz_date: String,
    pub(crate) time: SystemTime,
    pub(crate) session_token: Option<String>,
    /// `X-Amz-Expires` for presigned requests.
    pub(crate) expires: Option<u32>,
    pub(crate) payload_mode: PayloadMode,
}

impl V4Auth {
    /// The access key id from the credential scope.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    /// The credential scope (date, region, service).
    pub fn scope(&self) -> &CredentialScope {
        &self.scope
    }
    /// `X-Amz-Security-Token`, from the header (header auth) or the query (presigned).
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
    /// Whether the signature came in the query string.
    pub fn is_presigned(&self) -> bool {
        self.expires.is_some()
    }
    /// `X-Amz-Expires` of a presigned request.
    pub fn expires_secs(&self) -> Option<u32> {
        self.expires
    }
    /// The request time as it enters the string to sign, `YYYYMMDDTHHMMSSZ`: `X-Amz-Date` as sent, or the
    /// `Date` header converted to that form when there is no `X-Amz-Date`.
    pub fn amz_date(&self) -> &str {
        &self.amz_date
    }
    /// The request time.
    pub fn time(&self) -> SystemTime {
        self.time
    }
    /// The `SignedHeaders` list as sent (`;`-separated).
    pub fn signed_headers(&self) -> &str {
        &self.signed_headers
    }
    /// The signature the client sent.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// How the payload is covered.
    pub fn payload_mode(&self) -> PayloadMode {
        self.payload_mode.clone()
    }
}

/// A parsed S3 SigV2 presigned URL (`AWSAccessKeyId`, `Signature`, `Expires`), not yet verified.
#[derive(Clone, Debug)]
pub struct V2Auth {
    pub(crate) access_key_id: String,
    pub(crate) signature: Signature,
    pub(crate) expires_raw: String,
    pub(crate) expires: u64,
    pub(crate) session_token: Option<String>,
}

impl V2Auth {
    /// The `AWSAccessKeyId` parameter.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    /// The `x-amz-security-token` parameter (or header).
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
    /// `Expires`, in seconds since the Unix epoch.
    pub fn expires_epoch(&self) -> u64 {
        self.expires
    }
}

/// The authentication a request carries.
#[derive(Clone, Debug)]
pub enum SignedRequest {
    /// SigV4, in the `Authorization` header or presigned in the query.
    V4(V4Auth),
    /// S3 SigV2 presigned query parameters.
    V2Presigned(V2Auth),
}

impl SignedRequest {
    /// The access key id the caller must look a secret up for.
    pub fn access_key_id(&self) -> &str {
        match self {
            SignedRequest::V4(a) => a.access_key_id(),
            SignedRequest::V2Presigned(a) => a.access_key_id(),
        }
    }
    /// The session token, if any.
    pub fn session_token(&self) -> Option<&str> {
        match self {
            SignedRequest::V4(a) => a.session_token(),
            SignedRequest::V2Presigned(a) => a.session_token(),
        }
    }
}

/// Why a request's authentication could not be parsed. Each variant says which part is wrong;
/// [`ParseError::message`] gives AWS's wording.
///
/// The server answers header forms as `IncompleteSignature` (IAM/STS, HTTP 400) and presigned forms
/// ([`ParseError::is_query_auth`]) as S3's `AuthorizationQueryParametersError`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The `Authorization` header lacks some of `Credential`, `SignedHeaders`, `Signature`, or the
    /// request has neither `X-Amz-Date` nor `Date`.
    AuthorizationIncomplete {
        /// Missing, in AWS's order: `Credential`, `Signature`, `SignedHeaders`, `Date`.
        missing: Vec<&'static str>,
        /// The header value as received.
        authorization: String,
    },
    /// A `,`-separated part of the `Authorization` header has no `=`.
    AuthorizationMissingEquals {
        /// The offending part.
        pair: String,
    },
    /// A parameter appears twice in the `Authorization` header or the query.
    DuplicateParameter {
        /// The parameter name.
        name: String,
        /// Whether it was in the query string.
        query: bool,
    },
    /// More than one `Authorization` header.
    MultipleAuthorizationHeaders,
    /// The `Authorization` header (or a query auth parameter) is not valid UTF-8 text.
    InvalidEncoding {
        /// The header or parameter.
        name: String,
    },
    /// An algorithm other than `AWS4-HMAC-SHA256` (header scheme or `X-Amz-Algorithm`).
    UnsupportedAlgorithm {
        /// The algorithm as sent.
        algorithm: String,
        /// Whether it came from `X-Amz-Algorithm`.
        query: bool,
    },
    /// SigV4A (`AWS4-ECDSA-P256-SHA256`, or a `STREAMING-AWS4-ECDSA-P256-SHA256-*` payload), which this
    /// service does not support.
    SigV4A {
        /// Whether it came from `X-Amz-Algorithm`.
        query: bool,
    },
    /// The credential is not `AKID/YYYYMMDD/region/service/aws4_request` (wrong element count, an empty
    /// element, or a date that is not 8 digits).
    MalformedCredential {
        /// The credential as sent.
        credential: String,
        /// Whether it came from `X-Amz-Credential`.
        query: bool,
    },
    /// The credential's last element is not `aws4_request`.
    InvalidTerminator {
        /// The terminator as sent.
        terminator: String,
        /// Whether it came from `X-Amz-Credential`.
        query: bool,
    },
    /// `X-Amz-Date` (or `Date`) is not a valid date in the expected format.
    InvalidDate {
        /// The value as sent.
        value: String,
        /// Whether it came from the `X-Amz-Date` query parameter.
        query: bool,
    },
    /// The credential scope's date differs from the date part of the request time.
    CredentialDateMismatch {
        /// `YYYYMMDD` of the credential scope.
        credential_date: String,
        /// The request time (`YYYYMMDDTHHMMSSZ`).
        amz_date: String,
        /// Whether the request is presigned.
        query: bool,
    },
    /// `SignedHeaders` is empty or not `;`-separated lowercase header names.
    InvalidSignedHeaders {
        /// The value as sent.
        value: String,
        /// Whether it came from `X-Amz-SignedHeaders`.
        query: bool,
    },
    /// A SigV4 presigned request lacks some of the required `X-Amz-*` parameters.
    MissingQueryParameters {
        /// The missing parameter names.
        missing: Vec<&'static str>,
    },
    /// `X-Amz-Expires` is not a whole number of seconds of at least 1.
    InvalidExpires {
        /// The value as sent.
        value: String,
    },
    /// `X-Amz-Expires` exceeds 604800 seconds (seven days).
    ExpiresTooLarge {
        /// The value as sent.
        value: String,
    },
    /// More than one authentication mechanism (header, SigV4 query, SigV2 query) in one request.
    MultipleAuthMechanisms,
    /// `x-amz-content-sha256` is neither lowercase hex SHA-256 nor a known payload mode.
    InvalidContentSha256 {
        /// The value as sent.
        value: String,
    },
    /// S3 header-signed SigV4 without `x-amz-content-sha256`.
    MissingContentSha256,
    /// A payload mode that the scope's service does not accept (`UNSIGNED-PAYLOAD` or streaming outside S3).
    PayloadModeNotAllowed {
        /// The `x-amz-content-sha256` value.
        value: String,
        /// The credential scope's service.
        service: String,
    },
    /// An S3 SigV2 presigned URL lacks `AWSAccessKeyId`, `Signature` or `Expires`.
    V2MissingParameters {
        /// The missing parameter names.
        missing: Vec<&'static str>,
    },
    /// The SigV2 `Expires` is not seconds since the epoch.
    V2InvalidExpires {
        /// The value as sent.
        value: String,
    },
}

impl ParseError {
    /// Whether the error concerns query-string (presigned) authentication: S3 answers those
    /// `AuthorizationQueryParametersError` rather than a header error.
    pub fn is_query_auth(&self) -> bool {
        match self {
            ParseError::DuplicateParameter { query, .. }
            | ParseError::UnsupportedAlgorithm { query, .. }
            | ParseError::SigV4A { query }
            | ParseError::MalformedCredential { query, .. }
            | ParseError::InvalidTerminator { query, .. }
            | ParseError::InvalidDate { query, .. }
            | ParseError::CredentialDateMismatch { query, .. }
            | ParseError::InvalidSignedHeaders { query, .. } => *query,
            ParseError::MissingQueryParameters { .. }
            | ParseError::InvalidExpires { .. }
            | ParseError::ExpiresTooLarge { .. }
            | ParseError::V2MissingParameters { .. }
            | ParseError::V2InvalidExpires { .. } => true,
            ParseError::AuthorizationIncomplete { .. }
            | ParseError::AuthorizationMissingEquals { .. }
            | ParseError::MultipleAuthorizationHeaders
            | ParseError::InvalidEncoding { .. }
            | ParseError::MultipleAuthMechanisms
            | ParseError::InvalidContentSha256 { .. }
            | ParseError::MissingContentSha256
            | ParseError::PayloadModeNotAllowed { .. } => false,
        }
    }

    /// The message AWS gives the client for this error (IAM/STS wording for header forms, S3 wording for
    /// query forms).
    pub fn message(&self) -> String {
        match self {
            ParseError::AuthorizationIncomplete { missing, authorization } => {
                let mut m = String::new();
                for part in missing {
                    if *part == "Date" {
                        m.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ");
                    } else {
                        m.push_str(&format!("Authorization header requires '{part}' parameter. "));
                    }
                }
                m.push_str("Authorization=");
                m.push_str(authorization);
                m
            }
            ParseError::AuthorizationMissingEquals { pair } => {
                let hashed = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(pair.as_bytes()));
                format!("Invalid key=value pair (missing equal-sign) in Authorization header (hashed with SHA-256 and encoded with Base64): '{hashed}'.")
            }
            ParseError::DuplicateParameter { name, query: false } => {
                format!("Authorization header has duplicate '{name}' parameter.")
            }
            ParseError::DuplicateParameter { name, query: true } => {
                format!("Query-string authentication parameter '{name}' appears more than once.")
            }
            ParseError::MultipleAuthorizationHeaders => {
                "The request carries more than one Authorization header.".to_owned()
            }
            ParseError::InvalidEncoding { name } => format!("{name} is not valid UTF-8 text."),
            ParseError::UnsupportedAlgorithm { algorithm, query: false } => format!("Unsupported AWS 'algorithm': '{algorithm}'"),
            ParseError::UnsupportedAlgorithm { query: true, .. } => {
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".to_owned()
            }
            ParseError::SigV4A { .. } => {
                "SigV4A (AWS4-ECDSA-P256-SHA256) is not supported by this service; sign with SigV4 (AWS4-HMAC-SHA256).".to_owned()
            }
            ParseError::MalformedCredential { credential, query: false } => format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
            ),
            ParseError::MalformedCredential { query: true, .. } => {
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".".to_owned()
            }
            ParseError::InvalidTerminator { terminator, query: false } => {
                format!("Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'.")
            }
            ParseError::InvalidTerminator { terminator, query: true } => format!(
                "Error parsing the X-Amz-Credential parameter; incorrect terminal \"{terminator}\". This endpoint uses \"aws4_request\"."
            ),
            ParseError::InvalidDate { value, query: false } => format!(
                "Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ),
            ParseError::InvalidDate { query: true, .. } => {
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"".to_owned()
            }
            ParseError::CredentialDateMismatch { credential_date, amz_date, query: false } => format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{credential_date}' != '{}', from '{amz_date}'.",
                amz_date.get(..8).unwrap_or(amz_date)
            ),
            ParseError::CredentialDateMismatch { credential_date, amz_date, query: true } => format!(
                "Invalid credential date \"{credential_date}\". This date is not the same as X-Amz-Date: \"{}\".",
                amz_date.get(..8).unwrap_or(amz_date)
            ),
            ParseError::InvalidSignedHeaders { value, .. } => {
                format!("SignedHeaders must be a ';'-separated list of lowercase header names, got '{value}'.")
            }
            ParseError::MissingQueryParameters { .. } => {
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.".to_owned()
            }
            ParseError::InvalidExpires { value } => {
                if value.starts_with('-') {
                    "X-Amz-Expires must be non-negative".to_owned()
                } else {
                    "X-Amz-Expires should be a number".to_owned()
                }
            }
            ParseError::ExpiresTooLarge { .. } => {
                "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds".to_owned()
            }
            ParseError::MultipleAuthMechanisms => {
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified".to_owned()
            }
            ParseError::InvalidContentSha256 { .. } => {
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.".to_owned()
            }
            ParseError::MissingContentSha256 => {
                "Missing required header for this request: x-amz-content-sha256".to_owned()
            }
            ParseError::PayloadModeNotAllowed { value, service } => {
                format!("x-amz-content-sha256 value '{value}' is not accepted by service '{service}'; send the hex SHA-256 of the body.")
            }
            ParseError::V2MissingParameters { .. } => {
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters".to_owned()
            }
            ParseError::V2InvalidExpires { value } => {
                format!("Invalid date (should be seconds since epoch): {value}")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ParseError {}

/// Query parameters with decoded names and values, in wire order.
struct QueryParams(Vec<(String, Vec<u8>)>);

impl QueryParams {
    fn parse(query: &str) -> Self {
        QueryParams(
            split_query(query)
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&percent_decode(k.as_bytes(), true)).into_owned(),
                        percent_decode(v.as_bytes(), true),
                    )
                })
                .collect(),
        )
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The single value of `name`: `Ok(None)` if absent, an error if repeated or not UTF-8.
    fn get(&self, name: &str) -> Result<Option<String>, ParseError> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return Err(ParseError::DuplicateParameter {
                        name: name.to_owned(),
                        query: true,
                    });
                }
                found = Some(v);
            }
        }
        found
            .map(|v| {
                String::from_utf8(v.clone()).map_err(|_| ParseError::InvalidEncoding {
                    name: name.to_owned(),
                })
            })
            .transpose()
    }

    /// The first value of a parameter whose name matches case-insensitively.
    fn get_ignore_case(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    }
}

/// Parses the authentication of a received request.
///
/// Returns `Ok(None)` when the request carries no authentication at all (no `Authorization` header, no
/// `X-Amz-Algorithm` / `X-Amz-Credential` / `X-Amz-Signature` and no `AWSAccessKeyId` / `Signature` query
/// parameters). Never panics, whatever the input.
pub fn parse(req: &Request<'_>) -> Result<Option<SignedRequest>, ParseError> {
    let mut auth_headers = req.headers.get_all(AUTHORIZATION).iter();
    let auth_header = auth_headers.next();
    if auth_headers.next().is_some() {
        return Err(ParseError::MultipleAuthorizationHeaders);
    }
    let params = QueryParams::parse(req.query);
    let v4_query = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"]
        .iter()
        .any(|n| params.has(n));
    let v2_query = params.has("AWSAccessKeyId") || params.has("Signature");
    let mechanisms =
        usize::from(auth_header.is_some()) + usize::from(v4_query) + usize::from(v2_query);
    if mechanisms > 1 {
        return Err(ParseError::MultipleAuthMechanisms);
    }
    if let Some(h) = auth_header {
        let value = h.to_str().map_err(|_| ParseError::InvalidEncoding {
            name: "Authorization".to_owned(),
        })?;
        return parse_header(value, req).map(|a| Some(SignedRequest::V4(a)));
    }
    if v4_query {
        return parse_presigned(&params).map(|a| Some(SignedRequest::V4(a)));
    }
    if v2_query {
        return parse_v2(&params, req).map(|a| Some(SignedRequest::V2Presigned(a)));
    }
    Ok(None)
}

fn header_str<'h>(req: &'h Request<'_>, name: &HeaderName) -> Result<Option<&'h str>, ParseError> {
    req.headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| ParseError::InvalidEncoding {
                name: name.as_str().to_owned(),
            })
        })
        .transpose()
}

fn parse_header(value: &str, req: &Request<'_>) -> Result<V4Auth, ParseError> {
    let value_trimmed = value.trim_matches(' ');
    let (algorithm, rest) = split_once_ascii(value_trimmed, b' ').unwrap_or((value_trimmed, ""));
    if algorithm == ALGORITHM_V4A {
        return Err(ParseError::SigV4A { query: false });
    }
    if algorithm != ALGORITHM {
        return Err(ParseError::UnsupportedAlgorithm {
            algorithm: algorithm.to_owned(),
            query: false,
        });
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in split_ascii(rest, b',') {
        let part = part.trim_matches(' ');
        if part.is_empty() {
            continue;
        }
        let (k, v) =
            split_once_ascii(part, b'=').ok_or_else(|| ParseError::AuthorizationMissingEquals {
                pair: part.to_owned(),
            })?;
        let slot = match k.trim_matches(' ') {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ParseError::DuplicateParameter {
                name: k.trim_matches(' ').to_owned(),
                query: false,
            });
        }
        *slot = Some(v.trim_matches(' '));
    }
    let amz_date = header_str(req, &X_AMZ_DATE)?;
    let date = if amz_date.is_none() {
        header_str(req, &DATE)?
    } else {
        None
    };
    let mut missing = Vec::new();
    for (name, present) in [
        ("Credential", credential.is_some()),
        ("Signature", signature.is_some()),
        ("SignedHeaders", signed_headers.is_some()),
        ("Date", amz_date.is_some() || date.is_some()),
    ] {
        if !present {
            missing.push(name);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature), true) =
        (credential, signed_headers, signature, missing.is_empty())
    else {
        return Err(ParseError::AuthorizationIncomplete {
            missing,
            authorization: value.to_owned(),
        });
    };
    let (access_key_id, scope) = parse_credential(credential, false)?;
    let (amz_date, time) = match (amz_date, date) {
        (Some(d), _) => (
            d.to_owned(),
            parse_amz_date(d).ok_or_else(|| ParseError::InvalidDate {
                value: d.to_owned(),
                query: false,
            })?,
        ),
        (None, Some(d)) => {
            let t = parse_http_date(d).ok_or_else(|| ParseError::InvalidDate {
                value: d.to_owned(),
                query: false,
            })?;
            (crate::time::format_amz_date(t), t)
        }
        (None, None) => unreachable_missing_date(value)?,
    };
    check_scope_date(&scope, &amz_date, false)?;
    check_signed_headers(signed_headers, false)?;
    let payload_mode = header_payload_mode(req, &scope)?;
    Ok(V4Auth {
        access_key_id,
        scope,
        signed_headers: signed_headers.to_owned(),
        signature: Signature::new(signature),
        amz_date,
        time,
        session_token: header_str(req, &X_AMZ_SECURITY_TOKEN)?.map(str::to_owned),
        expires: None,
        payload_mode,
    })
}

/// The date is checked above; this keeps the match total without a panic path.
fn unreachable_missing_date(value: &str) -> Result<(String, SystemTime), ParseError> {
    Err(ParseError::AuthorizationIncomplete {
        missing: vec!["Date"],
        authorization: value.to_owned(),
    })
}

fn parse_credential(
    credential: &str,
    query: bool,
) -> Result<(String, CredentialScope), ParseError> {
    let malformed = || ParseError::MalformedCredential {
        credential: credential.to_owned(),
        query,
    };
    let mut parts = split_ascii(credential, b'/');
    let (Some(akid), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed());
    };
    if akid.is_empty()
        || region.is_empty()
        || service.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed());
    }
    if terminator != "aws4_request" {
        return Err(ParseError::InvalidTerminator {
            terminator: terminator.to_owned(),
            query,
        });
    }
    Ok((akid.to_owned(), CredentialScope::new(date, region, service)))
}

fn check_scope_date(
    scope: &CredentialScope,
    amz_date: &str,
    query: bool,
) -> Result<(), ParseError> {
    if amz_date.get(..8) != Some(scope.date()) {
        return Err(ParseError::CredentialDateMismatch {
            credential_date: scope.date().to_owned(),
            amz_date: amz_date.to_owned(),
            query,
        });
    }
    Ok(())
}

/// Which bytes a signed header's name may hold: RFC 9110 token characters, letters lowercase.
const SIGNED_NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_lowercase() || b.is_ascii_digit();
        i += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

fn check_signed_headers(value: &str, query: bool) -> Result<(), ParseError> {
    let ok = !value.is_empty()
        && split_ascii(value, b';')
            .all(|h| !h.is_empty() && h.bytes().all(|b| SIGNED_NAME_BYTE[usize::from(b)]));
    if ok {
        Ok(())
    } else {
        Err(ParseError::InvalidSignedHeaders {
            value: value.to_owned(),
            query,
        })
    }
}

fn is_lower_hex_sha256(v: &str) -> bool {
    v.len() == 64
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn header_payload_mode(
    req: &Request<'_>,
    scope: &CredentialScope,
) -> Result<PayloadMode, ParseError> {
    let s3 = scope.service() == "s3";
    let Some(value) = header_str(req, &X_AMZ_CONTENT_SHA256)? else {
        return if s3 {
            Err(ParseError::MissingContentSha256)
        } else {
            Ok(PayloadMode::Computed)
        };
    };
    let mode = match value {
        v if is_lower_hex_sha256(v) => return Ok(PayloadMode::Hex(v.to_owned())),
        "UNSIGNED-PAYLOAD" => PayloadMode::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => PayloadMode::StreamingSigned { trailer: false },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
            PayloadMode::StreamingSigned { trailer: true }
        }
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => PayloadMode::StreamingUnsignedTrailer,
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"
        | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER" => {
            return Err(ParseError::SigV4A { query: false })
        }
        v => {
            return Err(ParseError::InvalidContentSha256 {
                value: v.to_owned(),
            })
        }
    };
    if !s3 {
        return Err(ParseError::PayloadModeNotAllowed {
            value: value.to_owned(),
            service: scope.service().to_owned(),
        });
    }
    Ok(mode)
}

fn parse_presigned(params: &QueryParams) -> Result<V4Auth, ParseError> {
    let algorithm = params.get("X-Amz-Algorithm")?;
    let credential = params.get("X-Amz-Credential")?;
    let signature = params.get("X-Amz-Signature")?;
    let amz_date = params.get("X-Amz-Date")?;
    let signed_headers = params.get("X-Amz-SignedHeaders")?;
    let expires = params.get("X-Amz-Expires")?;
    let session_token = params.get("X-Amz-Security-Token")?;
    if let Some(a) = &algorithm {
        if a == ALGORITHM_V4A {
            return Err(ParseError::SigV4A { query: true });
        }
        if a != ALGORITHM {
            return Err(ParseError::UnsupportedAlgorithm {
                algorithm: a.clone(),
                query: true,
            });
        }
    }
    let (
        Some(_),
        Some(credential),
        Some(signature),
        Some(amz_date),
        Some(signed_headers),
        Some(expires),
    ) = (
        &algorithm,
        credential,
        signature,
        amz_date,
        signed_headers,
        expires,
    )
    else {
        let missing = [
            ("X-Amz-Algorithm", "X-Amz-Algorithm"),
            ("X-Amz-Credential", "X-Amz-Credential"),
            ("X-Amz-Signature", "X-Amz-Signature"),
            ("X-Amz-Date", "X-Amz-Date"),
            ("X-Amz-SignedHeaders", "X-Amz-SignedHeaders"),
            ("X-Amz-Expires", "X-Amz-Expires"),
        ]
        .into_iter()
        .filter(|(n, _)| !params.has(n))
        .map(|(_, s)| s)
        .collect();
        return Err(ParseError::MissingQueryParameters { missing });
    };
    // S3 bounds X-Amz-Expires and enforces it; the other services check its form only and hold a
    // presigned request to the same 15-minute window as a signed header (see `check_time`). A
    // credential that does not parse is reported after the S3 checks, as before.
    let credential = parse_credential(&credential, true);
    let s3 = credential
        .as_ref()
        .map_or(true, |(_, scope)| scope.service() == "s3");
    let expires_secs = parse_expires(&expires, s3)?;
    let (access_key_id, scope) = credential?;
    let time = parse_amz_date(&amz_date).ok_or_else(|| ParseError::InvalidDate {
        value: amz_date.clone(),
        query: true,
    })?;
    check_scope_date(&scope, &amz_date, true)?;
    check_signed_headers(&signed_headers, true)?;
    let payload_mode = if scope.service() == "s3" {
        PayloadMode::Unsigned
    } else {
        PayloadMode::Computed
    };
    Ok(V4Auth {
        access_key_id,
        scope,
        signed_headers,
        signature: Signature::new(signature),
        amz_date,
        time,
        session_token,
        expires: Some(expires_secs),
        payload_mode,
    })
}

/// `X-Amz-Expires`: digits, and for S3 (`s3`) between 1 and [`MAX_PRESIGNED_EXPIRES`]. Other
/// services ignore its value (STS answers a presigned GetCallerIdentity with `X-Amz-Expires=0`, as
/// EKS tokens send it), so any number is taken there, capped at `u32::MAX`.
fn parse_expires(value: &str, s3: bool) -> Result<u32, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidExpires {
            value: value.to_owned(),
        });
    }
    let digits = value.trim_start_matches('0');
    if !s3 {
        return Ok(digits
            .parse()
            .unwrap_or(if digits.is_empty() { 0 } else { u32::MAX }));
    }
    if digits.len() > 7 {
        return Err(ParseError::ExpiresTooLarge {
            value: value.to_owned(),
        });
    }
    let n: u32 = digits.parse().unwrap_or(0);
    if n == 0 {
        return Err(ParseError::InvalidExpires {
            value: value.to_owned(),
        });
    }
    if n > MAX_PRESIGNED_EXPIRES {
        return Err(ParseError::ExpiresTooLarge {
            value: value.to_owned(),
        });
    }
    Ok(n)
}

fn parse_v2(params: &QueryParams, req: &Request<'_>) -> Result<V2Auth, ParseError> {
    let akid = params.get("AWSAccessKeyId")?;
    let signature = params.get("Signature")?;
    let expires = params.get("Expires")?;
    let (Some(akid), Some(signature), Some(expires)) = (akid, signature, expires) else {
        let missing = ["Signature", "Expires", "AWSAccessKeyId"]
            .into_iter()
            .filter(|n| !params.has(n))
            .collect();
        return Err(ParseError::V2MissingParameters { missing });
    };
    let epoch = if !expires.is_empty()
        && expires.len() <= 19
        && expires.bytes().all(|b| b.is_ascii_digit())
    {
        expires.parse::<u64>().ok()
    } else {
        None
    };
    let Some(epoch) = epoch else {
        return Err(ParseError::V2InvalidExpires { value: expires });
    };
    let session_token = match params.get_ignore_case("x-amz-security-token") {
        Some(t) => Some(t),
        None => header_str(req, &X_AMZ_SECURITY_TOKEN)?.map(str::to_owned),
    };
    Ok(V2Auth {
        access_key_id: akid,
        signature: Signature::new(signature),
        expires_raw: expires,
        expires: epoch,
        session_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn parse_h(pairs: &[(&str, &str)], query: &str) -> Result<Option<SignedRequest>, ParseError> {
        let h = headers(pairs);
        parse(&Request {
            method: "GET",
            path: "/",
            query,
            headers: &h,
        })
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    #[test]
    fn parses_header_with_and_without_spaces() {
        for auth in [
            AUTH.to_owned(),
            AUTH.replace(", ", ","),
            AUTH.replace(", ", " ,  "),
        ] {
            let r = parse_h(
                &[("authorization", &auth), ("x-amz-date", "20150830T123600Z")],
                "",
            )
            .unwrap()
            .unwrap();
            let SignedRequest::V4(a) = r else { panic!() };
            assert_eq!(a.access_key_id(), "AKIDEXAMPLE");
            assert_eq!(a.scope().date(), "20150830");
            assert_eq!(a.scope().region(), "us-east-1");
            assert_eq!(a.scope().service(), "iam");
            assert_eq!(a.scope().to_string(), "20150830/us-east-1/iam/aws4_request");
            assert_eq!(a.signed_headers(), "content-type;host;x-amz-date");
            assert!(!a.is_presigned());
            assert_eq!(a.payload_mode(), PayloadMode::Computed);
            assert_eq!(a.amz_date(), "20150830T123600Z");
        }
    }

    #[test]
    fn no_auth_is_none() {
        assert!(
            parse_h(&[("host", "x")], "Action=GetCallerIdentity&Expires=5")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn incomplete_header_lists_what_is_missing_in_aws_words() {
        let e = parse_h(
            &[("authorization", "AWS4-HMAC-SHA256 SignedHeaders=host")],
            "",
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 SignedHeaders=host"
        );
        assert!(!e.is_query_auth());
        let e = parse_h(&[("authorization", "AWS4-HMAC-SHA256 Credential")], "").unwrap_err();
        assert!(matches!(e, ParseError::AuthorizationMissingEquals { .. }));
        assert!(e
            .message()
            .starts_with("Invalid key=value pair (missing equal-sign) in Authorization header"));
    }

    #[test]
    fn refuses_sigv4a_and_unknown_algorithms() {
        let e = parse_h(
            &[(
                "authorization",
                "AWS4-ECDSA-P256-SHA256 Credential=a/b/s3/aws4_request",
            )],
            "",
        )
        .unwrap_err();
        assert_eq!(e, ParseError::SigV4A { query: false });
        let e = parse_h(
            &[],
            "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=x",
        )
        .unwrap_err();
        assert_eq!(e, ParseError::SigV4A { query: true });
        let e = parse_h(&[("authorization", "AWS AKID:sig")], "").unwrap_err();
        assert!(matches!(e, ParseError::UnsupportedAlgorithm { .. }));
        let e = parse_h(
            &[
                ("authorization", &AUTH.replace("content-type;", "")),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "x-amz-content-sha256",
                    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
                ),
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(e, ParseError::SigV4A { query: false });
    }

    #[test]
    fn credential_errors() {
        let bad = |cred: &str| {
            parse_h(
                &[
                    (
                        "authorization",
                        &AUTH.replace("AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request", cred),
                    ),
                    ("x-amz-date", "20150830T123600Z"),
                ],
                "",
            )
            .unwrap_err()
        };
        assert!(matches!(
            bad("AKID/20150830/us-east-1/iam"),
            ParseError::MalformedCredential { .. }
        ));
        assert_eq!(
            bad("AKID/2015").message(),
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got 'AKID/2015'"
        );
        assert!(matches!(
            bad("/20150830/us-east-1/iam/aws4_request"),
            ParseError::MalformedCredential { .. }
        ));
        assert!(matches!(
            bad("AKID/2015083x/us-east-1/iam/aws4_request"),
            ParseError::MalformedCredential { .. }
        ));
        assert_eq!(
            bad("AKID/20150830/us-east-1/iam/aws5_request").message(),
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'."
        );
        let e = bad("AKID/20150831/us-east-1/iam/aws4_request");
        assert_eq!(
            e.message(),
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20150831' != '20150830', from '20150830T123600Z'."
        );
    }

    #[test]
    fn date_header_fallback_and_bad_dates() {
        let r = parse_h(
            &[
                ("authorization", AUTH),
                ("date", "Sun, 30 Aug 2015 12:36:00 GMT"),
            ],
            "",
        )
        .unwrap()
        .unwrap();
        let SignedRequest::V4(a) = r else { panic!() };
        assert_eq!(a.amz_date(), "20150830T123600Z");
        let e = parse_h(
            &[
                ("authorization", AUTH),
                ("x-amz-date", "2015-08-30T12:36:00Z"),
            ],
            "",
        )
        .unwrap_err();
        assert!(matches!(e, ParseError::InvalidDate { query: false, .. }));
    }

    #[test]
    fn content_sha256_rules() {
        let s3auth = AUTH.replace("/iam/", "/s3/");
        let e = parse_h(
            &[
                ("authorization", &s3auth),
                ("x-amz-date", "20150830T123600Z"),
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(e, ParseError::MissingContentSha256);
        let e = parse_h(
            &[
                ("authorization", &s3auth),
                ("x-amz-date", "20150830T123600Z"),
                ("x-amz-content-sha256", "ABC"),
            ],
            "",
        )
        .unwrap_err();
        assert!(matches!(e, ParseError::InvalidContentSha256 { .. }));
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let e = parse_h(
            &[
                ("authorization", &s3auth),
                ("x-amz-date", "20150830T123600Z"),
                ("x-amz-content-sha256", upper),
            ],
            "",
        )
        .unwrap_err();
        assert!(matches!(e, ParseError::InvalidContentSha256 { .. }));
        for (v, mode) in [
            ("UNSIGNED-PAYLOAD", PayloadMode::Unsigned),
            (
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                PayloadMode::StreamingSigned { trailer: false },
            ),
            (
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                PayloadMode::StreamingSigned { trailer: true },
            ),
            (
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                PayloadMode::StreamingUnsignedTrailer,
            ),
        ] {
            let r = parse_h(
                &[
                    ("authorization", &s3auth),
                    ("x-amz-date", "20150830T123600Z"),
                    ("x-amz-content-sha256", v),
                ],
                "",
            )
            .unwrap()
            .unwrap();
            let SignedRequest::V4(a) = r else { panic!() };
            assert_eq!(a.payload_mode(), mode);
            let e = parse_h(
                &[
                    ("authorization", AUTH),
                    ("x-amz-date", "20150830T123600Z"),
                    ("x-amz-content-sha256", v),
                ],
                "",
            )
            .unwrap_err();
            assert!(matches!(e, ParseError::PayloadModeNotAllowed { .. }));
        }
    }

    const PRESIGNED: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d";

    #[test]
    fn parses_presigned() {
        let SignedRequest::V4(a) = parse_h(&[], PRESIGNED).unwrap().unwrap() else {
            panic!()
        };
        assert!(a.is_presigned());
        assert_eq!(a.expires_secs(), Some(3600));
        assert_eq!(a.scope().service(), "service");
        assert_eq!(a.payload_mode(), PayloadMode::Computed);
        let SignedRequest::V4(a) = parse_h(&[], &PRESIGNED.replace("%2Fservice%2F", "%2Fs3%2F"))
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(a.payload_mode(), PayloadMode::Unsigned);
    }

    #[test]
    fn presigned_errors() {
        let e = parse_h(&[], "X-Amz-Signature=abc").unwrap_err();
        assert!(e.is_query_auth());
        assert_eq!(e.message(), "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.");
        // S3 bounds X-Amz-Expires to 1..=604800.
        let s3 = PRESIGNED.replace("%2Fservice%2F", "%2Fs3%2F");
        let expires =
            |q: &str, v: &str| q.replace("X-Amz-Expires=3600", &format!("X-Amz-Expires={v}"));
        let e = parse_h(&[], &expires(&s3, "604801")).unwrap_err();
        assert_eq!(e.message(), "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds");
        assert!(parse_h(&[], &expires(&s3, "604800")).is_ok());
        assert!(parse_h(&[], &expires(&s3, "99999999999999999999")).is_err());
        for bad in ["0", "-1", "", "1.5", "abc"] {
            let e = parse_h(&[], &expires(&s3, bad)).unwrap_err();
            assert!(matches!(e, ParseError::InvalidExpires { .. }), "{bad}");
        }
        // Other services take any number (EKS tokens send 0 to STS) and refuse other text.
        for good in ["0", "1", "604801", "99999999999999999999"] {
            assert!(parse_h(&[], &expires(PRESIGNED, good)).is_ok(), "{good}");
        }
        for bad in ["-1", "", "1.5", "abc"] {
            let e = parse_h(&[], &expires(PRESIGNED, bad)).unwrap_err();
            assert!(matches!(e, ParseError::InvalidExpires { .. }), "{bad}");
        }
        let e = parse_h(
            &[],
            &PRESIGNED.replace(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                "X-Amz-Algorithm=AWS4-HMAC-SHA1",
            ),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            ParseError::UnsupportedAlgorithm { query: true, .. }
        ));
        let e = parse_h(&[], &format!("{PRESIGNED}&X-Amz-Signature=00")).unwrap_err();
        assert!(matches!(
            e,
            ParseError::DuplicateParameter { query: true, .. }
        ));
        let e = parse_h(&[], &PRESIGNED.replace("20150830%2F", "20150831%2F")).unwrap_err();
        assert_eq!(e.message(), "Invalid credential date \"20150831\". This date is not the same as X-Amz-Date: \"20150830\".");
        let e = parse_h(&[("authorization", AUTH)], PRESIGNED).unwrap_err();
        assert_eq!(e, ParseError::MultipleAuthMechanisms);
        let e = parse_h(
            &[],
            &PRESIGNED.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=Host"),
        )
        .unwrap_err();
        assert!(matches!(e, ParseError::InvalidSignedHeaders { .. }));
    }

    #[test]
    fn parses_v2_presigned() {
        let q = "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&x-amz-security-token=tok";
        let SignedRequest::V2Presigned(a) = parse_h(&[], q).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(a.access_key_id(), "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(a.expires_epoch(), 1_175_139_620);
        assert_eq!(a.session_token(), Some("tok"));
        assert_eq!(a.signature.as_str(), "NpgCjnDzrM+WFzoENXmpNDUsSn8=");
        let e = parse_h(&[], "Signature=x").unwrap_err();
        assert_eq!(
            e,
            ParseError::V2MissingParameters {
                missing: vec!["Expires", "AWSAccessKeyId"]
            }
        );
        let e = parse_h(&[], "Signature=x&AWSAccessKeyId=a&Expires=soon").unwrap_err();
        assert!(matches!(e, ParseError::V2InvalidExpires { .. }));
    }
}
