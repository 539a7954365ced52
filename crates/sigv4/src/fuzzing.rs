//! Entry points for the cargo-fuzz targets in `crates/sigv4/fuzz`. Not a stable API.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::chunked::StreamingState;
use crate::key::SigningKey;
use crate::parse::PayloadMode;
use crate::{parse, ChunkDecoder, Request, SecretKey};

/// Parses `data` as an `Authorization` header value (plus a fixed `x-amz-date`), then verifies whatever
/// parses against a fixed secret. Must never panic.
pub fn authorization_header(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let Ok(v) = HeaderValue::from_bytes(data) else {
        return;
    };
    headers.insert(http::header::AUTHORIZATION, v);
    headers.insert("host", HeaderValue::from_static("sts.amazonaws.com"));
    headers.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
    run(&Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
    });
}

/// Splits `data` into a path and a query at the first `?`, with headers from the lines after the
/// first `\n`, and parses and verifies it as a presigned (or any) request. Must never panic.
pub fn presigned_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (path, query) = first.split_once('?').unwrap_or(("/", first));
    let mut headers = HeaderMap::new();
    for line in rest.lines() {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(n, v);
            }
        }
    }
    run(&Request {
        method: "GET",
        path,
        query,
        headers: &headers,
    });
}

fn run(req: &Request<'_>) {
    let now = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
    if let Ok(Some(auth)) = parse(req) {
        let _ = auth.access_key_id();
        match auth {
            crate::SignedRequest::V4(a) => {
                let _ = a
                    .verify(req, b"", &secret, now, None)
                    .map_err(|e| e.message());
            }
            crate::SignedRequest::V2Presigned(a) => {
                let _ = a.verify(req, &secret, now).map_err(|e| e.message());
            }
        }
    } else if let Err(e) = parse(req) {
        let _ = (e.message(), e.is_query_auth());
    }
}

/// Feeds `data` to chunk decoders of every streaming mode, split at the position given by the first
/// byte. Must never panic.
pub fn chunked_body(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(body.len());
    let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
    for mode in [
        PayloadMode::StreamingSigned { trailer: false },
        PayloadMode::StreamingSigned { trailer: true },
        PayloadMode::StreamingUnsignedTrailer,
    ] {
        let state = StreamingState {
            key: SigningKey::derive(&secret, "20130524", "us-east-1", "s3"),
            seed: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            mode,
            decoded_length: Some(body.len() as u64),
            trailer_name: None,
        };
        let mut d = ChunkDecoder::new(state)
            .with_max_chunk_size(1 << 16)
            .expect_checksum_trailer("x-amz-checksum-crc32");
        let _ = d.feed(&body[..split]);
        let _ = d.take_data();
        let _ = d.feed(&body[split..]);
        let _ = d.finish();
    }
}
