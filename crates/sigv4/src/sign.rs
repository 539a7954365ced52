//! Signing with the same canonicalization the verifier uses, for the doctor, key rotation and tests.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::canonical::{
    canonical_request, sha256_hex, string_to_sign, uri_encode, CanonicalParts, PathMode, ALGORITHM,
    EMPTY_SHA256,
};
use crate::chunked::{chunk_signature, trailer_signature};
use crate::key::SigningKey;
use crate::time::format_amz_date;
use crate::verify::{v2_sign, v2_string_to_sign};
use crate::{Request, SecretKey};

/// Headers left unsigned, as botocore does (hop-by-hop and proxy-rewritten ones).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "expect",
    "connection",
    "transfer-encoding",
    "x-amzn-trace-id",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
];

/// Who signs, for what scope, at what time.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a SecretKey,
    /// A session token, sent as `X-Amz-Security-Token` and signed.
    pub session_token: Option<&'a str>,
    /// The region of the credential scope.
    pub region: &'a str,
    /// The service of the credential scope (`s3` selects S3's path and payload rules).
    pub service: &'a str,
    /// The signing time.
    pub time: SystemTime,
}

impl SigningParams<'_> {
    fn date_and_scope(&self) -> (String, String) {
        let amz_date = format_amz_date(self.time);
        let scope = format!(
            "{}/{}/{}/aws4_request",
            &amz_date[..8],
            self.region,
            self.service
        );
        (amz_date, scope)
    }

    fn key(&self, amz_date: &str) -> SigningKey {
        SigningKey::derive(self.secret, &amz_date[..8], self.region, self.service)
    }
}

fn signed_header_names(headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !UNSIGNED_HEADERS.contains(k))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(";")
}

/// Signs a request in its headers: adds `x-amz-date`, `x-amz-security-token` (with a token),
/// `x-amz-content-sha256` for `s3` (the hex SHA-256 of `body`, unless the header is already there, e.g. a
/// `STREAMING-*` mode or `UNSIGNED-PAYLOAD`), and `authorization`. `host` must already be in `headers`.
/// Every header present is signed except hop-by-hop ones and `user-agent`. `path` and `query` are as they
/// will be sent on the wire (percent-encoded). Returns the signature (hex).
pub fn sign_headers(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    params: &SigningParams<'_>,
) -> String {
    let (amz_date, scope) = params.date_and_scope();
    headers.remove(http::header::AUTHORIZATION);
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&amz_date).unwrap_or(HeaderValue::from_static("")),
    );
    if let Some(token) = params.session_token {
        if let Ok(v) = HeaderValue::from_str(token) {
            headers.insert("x-amz-security-token", v);
        }
    }
    let payload_hash = match headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => v.to_owned(),
        None => {
            let h = sha256_hex(body);
            if params.service == "s3" {
                if let Ok(v) = HeaderValue::from_str(&h) {
                    headers.insert("x-amz-content-sha256", v);
                }
            }
            h
        }
    };
    let signed_headers = signed_header_names(headers);
    let canonical = canonical_request(&CanonicalParts {
        method,
        path,
        query,
        headers,
        signed_headers: &signed_headers,
        path_mode: PathMode::for_service(params.service),
        presigned: false,
        payload_hash: &payload_hash,
    })
    .unwrap_or_default();
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let signature = params.key(&amz_date).sign(sts.as_bytes());
    let auth = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        params.access_key_id
    );
    if let Ok(v) = HeaderValue::from_str(&auth) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    signature
}

fn push_param(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(name);
    out.push('=');
    let mut enc = Vec::with_capacity(value.len());
    uri_encode(value.as_bytes(), false, &mut enc);
    out.push_str(&String::from_utf8_lossy(&enc));
}

/// Presigns a request: returns the full query string of the URL (the existing `query` followed by the
/// `X-Amz-*` parameters, `X-Amz-Signature` last). Signs every header in `headers` (usually just `host`).
/// S3 signs `UNSIGNED-PAYLOAD`, other services the SHA-256 of an empty body. `expires` is in seconds
/// (AWS accepts 1..=604800).
pub fn presign(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    expires: u32,
    params: &SigningParams<'_>,
) -> String {
    let (amz_date, scope) = params.date_and_scope();
    let signed_headers = signed_header_names(headers);
    let mut q = query.to_owned();
    push_param(&mut q, "X-Amz-Algorithm", ALGORITHM);
    push_param(
        &mut q,
        "X-Amz-Credential",
        &format!("{}/{scope}", params.access_key_id),
    );
    push_param(&mut q, "X-Amz-Date", &amz_date);
    push_param(&mut q, "X-Amz-Expires", &expires.to_string());
    push_param(&mut q, "X-Amz-SignedHeaders", &signed_headers);
    if let Some(token) = params.session_token {
        push_param(&mut q, "X-Amz-Security-Token", token);
    }
    let payload_hash = if params.service == "s3" {
        "UNSIGNED-PAYLOAD"
    } else {
        EMPTY_SHA256
    };
    let canonical = canonical_request(&CanonicalParts {
        method,
        path,
        query: &q,
        headers,
        signed_headers: &signed_headers,
        path_mode: PathMode::for_service(params.service),
        presigned: true,
        payload_hash,
    })
    .unwrap_or_default();
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let signature = params.key(&amz_date).sign(sts.as_bytes());
    push_param(&mut q, "X-Amz-Signature", &signature);
    q
}

/// Presigns an S3 request with SigV2 query authentication (as botocore does by default in some regions):
/// returns the full query string (existing `query`, then `AWSAccessKeyId`, `Signature`, `Expires`, and
/// `x-amz-security-token` with a token). `path` is path-style (`/bucket/key`), as sent. Only the key id,
/// secret and token of `params` are used; `expires_epoch` is in seconds since the Unix epoch.
pub fn presign_v2(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    expires_epoch: u64,
    params: &SigningParams<'_>,
) -> String {
    let mut q = query.to_owned();
    if let Some(token) = params.session_token {
        push_param(&mut q, "x-amz-security-token", token);
    }
    let expires = expires_epoch.to_string();
    let sts = v2_string_to_sign(
        &Request {
            method,
            path,
            query: &q,
            headers,
        },
        &expires,
    );
    let signature = v2_sign(params.secret, &sts);
    let mut out = query.to_owned();
    push_param(&mut out, "AWSAccessKeyId", params.access_key_id);
    push_param(&mut out, "Signature", &signature);
    push_param(&mut out, "Expires", &expires);
    if let Some(token) = params.session_token {
        push_param(&mut out, "x-amz-security-token", token);
    }
    out
}

/// Encodes `data` as a signed aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, or `-TRAILER` when
/// `trailers` is `Some`), chained from `seed_signature` (the signature [`sign_headers`] returned for the
/// request). `chunk_size` must be at least 1.
pub fn aws_chunked_signed(
    data: &[u8],
    chunk_size: usize,
    seed_signature: &str,
    trailers: Option<&[(String, String)]>,
    params: &SigningParams<'_>,
) -> Vec<u8> {
    let (amz_date, scope) = params.date_and_scope();
    let key = params.key(&amz_date);
    let mut out = Vec::with_capacity(data.len() + 128);
    let mut previous = seed_signature.to_owned();
    let mut chunks: Vec<&[u8]> = data.chunks(chunk_size.max(1)).collect();
    chunks.push(&[]);
    for chunk in chunks {
        let hash = crate::canonical::to_hex(&Sha256::digest(chunk));
        let sig = chunk_signature(&key, &amz_date, &scope, &previous, &hash);
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        if !chunk.is_empty() || trailers.is_none() {
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        previous = sig;
    }
    if let Some(trailers) = trailers {
        for (n, v) in trailers {
            out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
        }
        let sig = trailer_signature(&key, &amz_date, &scope, &previous, trailers);
        out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
    }
    out
}

/// Encodes `data` as an unsigned aws-chunked body with trailers (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
pub fn aws_chunked_unsigned(
    data: &[u8],
    chunk_size: usize,
    trailers: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for chunk in data.chunks(chunk_size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
