//! Requests signed by the `aws-sigv4` crate (the AWS SDK for Rust's signer) verify, and every single
//! mutation of them fails. Also aws-chunked bodies whose chunk and trailer signatures `aws-sigv4` made.

mod common;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use common::{Shape, AKID, SECRET, TOKEN};
use keyward_sigv4::{parse, PayloadMode, Request, SecretKey, SignedRequest, SigningKeyCache};

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn identity(token: bool) -> Identity {
    Credentials::new(AKID, SECRET, token.then(|| TOKEN.to_owned()), None, "test").into()
}

/// Signs a shape with aws-sigv4, returning the wire request.
fn sign_shape(s: &Shape, presign: bool, time: SystemTime) -> common::Wire {
    let s3 = s.service == "s3";
    let mut query = s.raw_query.to_owned();
    for (k, v) in &s.params {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{}={}", encode(k), encode(v)));
    }
    let url = if query.is_empty() {
        s.url.to_owned()
    } else {
        format!("{}?{query}", s.url)
    };
    let (host, _, _) = common::split_url(&url);
    let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
    headers.extend(
        s.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let body: &[u8] = if presign { b"" } else { s.body.as_bytes() };
    let mut settings = SigningSettings::default();
    if s3 {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(3600));
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    }
    let signable_body = if (s3 && presign) || s.unsigned_payload {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(body)
    };
    let id = identity(s.token);
    let params = v4::SigningParams::builder()
        .identity(&id)
        .region("us-east-1")
        .name(s.service)
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        s.method,
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        signable_body,
    )
    .unwrap();
    let (instructions, _sig) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method(s.method).uri(&url);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let pairs: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let scheme_host = url.split_once("://").map(|(sch, rest)| {
        let auth = rest.split('/').next().unwrap();
        format!("{sch}://{auth}")
    });
    let full = format!(
        "{}{}",
        scheme_host.unwrap(),
        req.uri().path_and_query().unwrap()
    );
    common::wire(s.method, &full, &pairs, body.to_vec())
}

#[test]
fn aws_sigv4_signed_requests_verify_and_mutations_fail() {
    let cache = SigningKeyCache::new(64);
    let time = common::fixed_time();
    let (mut n, mut mutations) = (0, 0);
    for s in common::corpus() {
        for presign in [false, true] {
            let w = sign_shape(&s, presign, time);
            mutations += common::check(
                &format!("{}/{}", s.id, if presign { "presign" } else { "header" }),
                &w,
                &cache,
            );
            n += 1;
        }
    }
    eprintln!("aws-sigv4: {n} signed requests verified, {mutations} mutations all refused");
    assert!(mutations > 150);
}

fn s3_streaming(mode: &str, time: SystemTime) -> (common::Wire, String) {
    let id = identity(false);
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&id)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers = [
        ("host", "127.0.0.1:9000"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "100000"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
    ];
    let url = "http://127.0.0.1:9000/bucket/big%20object";
    let signable = SignableRequest::new(
        "PUT",
        url,
        headers.iter().copied(),
        SignableBody::Precomputed(mode.to_owned()),
    )
    .unwrap();
    let (instructions, seed) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("PUT").uri(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let pairs: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    (common::wire("PUT", url, &pairs, vec![]), seed)
}

fn data() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

fn crc32_b64(d: &[u8]) -> String {
    // Independent bitwise CRC-32 for the trailer value.
    let mut c = !0u32;
    for &b in d {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode((!c).to_be_bytes())
}

#[test]
fn aws_sigv4_signed_chunks_and_trailer_verify() {
    let time = common::fixed_time();
    let (w, seed) = s3_streaming("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", time);
    let req: Request<'_> = w.request();
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    assert_eq!(
        a.payload_mode(),
        PayloadMode::StreamingSigned { trailer: true }
    );
    let secret = SecretKey::new(SECRET.into());
    let v = a.verify(&req, b"", &secret, time, None).unwrap();

    // Build the body with aws-sigv4's own chunk and trailer signers.
    let id = identity(false);
    let params = v4::SigningParams::builder()
        .identity(&id)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(())
        .build()
        .unwrap();
    let data = data();
    let mut body = Vec::new();
    let mut running = seed.clone();
    for chunk in data.chunks(8192).chain(std::iter::once(&[][..])) {
        let sig = v4::sign_chunk(&bytes::Bytes::copy_from_slice(chunk), &running, &params)
            .unwrap()
            .into_parts()
            .1;
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        if !chunk.is_empty() {
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        running = sig;
    }
    let crc = crc32_b64(&data);
    let mut trailers = aws_smithy_runtime_api::http::Headers::new();
    trailers.insert("x-amz-checksum-crc32", crc.clone());
    let tsig = v4::sign_trailer(&trailers, &running, &params)
        .unwrap()
        .into_parts()
        .1;
    body.extend_from_slice(
        format!("x-amz-checksum-crc32:{crc}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n").as_bytes(),
    );

    let mut d = v
        .chunk_decoder()
        .unwrap()
        .expect_checksum_trailer("x-amz-checksum-crc32");
    let mut out = Vec::new();
    for piece in body.chunks(1000) {
        d.feed(piece).unwrap();
        out.extend(d.take_data());
    }
    let got = d.finish().unwrap();
    assert_eq!(out, data);
    assert_eq!(got, vec![("x-amz-checksum-crc32".to_owned(), crc.clone())]);

    // A changed trailer value breaks the trailer signature.
    let text = String::from_utf8_lossy(&body).replace(&crc, "AAAAAA==");
    let mut d = v.chunk_decoder().unwrap();
    d.feed(text.as_bytes()).unwrap_or(());
    assert!(d.finish().is_err());
}

#[test]
fn unsigned_trailer_mode_checks_the_checksum() {
    let time = common::fixed_time();
    let (w, _) = s3_streaming("STREAMING-UNSIGNED-PAYLOAD-TRAILER", time);
    let req = w.request();
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    assert_eq!(a.payload_mode(), PayloadMode::StreamingUnsignedTrailer);
    let v = a
        .verify(&req, b"", &SecretKey::new(SECRET.into()), time, None)
        .unwrap();
    let data = data();
    let good = keyward_sigv4::sign::aws_chunked_unsigned(
        &data,
        65_536,
        &[("x-amz-checksum-crc32".into(), crc32_b64(&data))],
    );
    // x-amz-trailer announced the CRC32 trailer: the decoder checks it without being told.
    let mut d = v.chunk_decoder().unwrap();
    d.feed(&good).unwrap();
    assert_eq!(d.take_data(), data);
    d.finish().unwrap();
    let bad = keyward_sigv4::sign::aws_chunked_unsigned(
        &data,
        65_536,
        &[("x-amz-checksum-crc32".into(), "AAAAAA==".into())],
    );
    let mut d = v.chunk_decoder().unwrap();
    d.feed(&bad).unwrap();
    assert!(matches!(
        d.finish(),
        Err(keyward_sigv4::ChunkError::ChecksumMismatch { .. })
    ));
}
