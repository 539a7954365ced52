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

/// With the first byte's top bit clear: feeds the rest to chunk decoders of every streaming mode, split
/// at the position given by that byte; must never panic. With it set: signs the rest as an aws-chunked
/// body (chunk size and trailer from the low bits), checks that it decodes to the same bytes, and that
/// flipping any one bit of it (position chosen from the data) is refused.
pub fn chunked_body(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    if split & 0x80 != 0 {
        signed_round_trip(split, body);
        return;
    }
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

fn signed_round_trip(ctl: u8, data: &[u8]) {
    use crate::sign::{aws_chunked_signed, SigningParams};
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
    let time = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
    let params = SigningParams {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret: &secret,
        session_token: None,
        region: "us-east-1",
        service: "s3",
        time,
    };
    let chunk_size = usize::from(ctl & 0x3f) + 1;
    let trailer = ctl & 0x40 != 0;
    let crc = crate::chunked::checksum_base64("x-amz-checksum-crc32", data).unwrap_or_default();
    let trailers = [("x-amz-checksum-crc32".to_owned(), crc)];
    let body = aws_chunked_signed(
        data,
        chunk_size,
        SEED,
        trailer.then_some(&trailers[..]),
        &params,
    );
    let decoder = || {
        ChunkDecoder::new(StreamingState {
            key: SigningKey::derive(&secret, "20130524", "us-east-1", "s3"),
            seed: SEED.into(),
            amz_date: crate::format_amz_date(time),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            mode: PayloadMode::StreamingSigned { trailer },
            decoded_length: Some(data.len() as u64),
            trailer_name: trailer.then(|| "x-amz-checksum-crc32".to_owned()),
        })
    };
    let mut d = decoder();
    let mut out = Vec::new();
    for piece in body.chunks(chunk_size * 3 + 1) {
        assert!(d.feed(piece).is_ok(), "a validly signed body was refused");
        out.extend(d.take_data());
    }
    assert_eq!(out, data, "decoded data differs");
    assert!(
        d.finish().is_ok(),
        "a validly signed body was refused at finish"
    );
    let seed = data.iter().fold(usize::from(ctl), |a, &b| {
        a.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    let pos = seed % body.len().max(1);
    let bit = 1u8 << (seed / 7 % 8);
    let mut bad = body.clone();
    if let Some(b) = bad.get_mut(pos) {
        *b ^= bit;
    }
    // A flip must be refused, unless it only changed the spelling of something case-insensitive (hex
    // digits of a chunk size, a trailer name): then the data and trailers must come out unchanged.
    let mut d = decoder();
    let mut out = Vec::new();
    let accepted = d.feed(&bad).is_ok() && {
        out = d.take_data();
        d.finish()
            .map(|t| t == if trailer { trailers.to_vec() } else { vec![] })
            .unwrap_or(false)
    };
    if accepted {
        let was = body.get(pos).copied().unwrap_or(0);
        let now = bad.get(pos).copied().unwrap_or(0);
        assert!(
            was.eq_ignore_ascii_case(&now) && out == data,
            "flipping bit {bit:#x} of byte {pos} ({:?} -> {:?}) was accepted",
            char::from(was),
            char::from(now)
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn harnesses_run_on_sample_inputs() {
        super::authorization_header(b"AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0");
        super::presigned_query(b"/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=0\nhost:x");
        super::chunked_body(b"\x104\r\nabcd\r\n0\r\n\r\n");
        for ctl in [0x80u8, 0x81, 0xbf, 0xc0, 0xc3, 0xff] {
            for len in [0usize, 1, 5, 64, 200] {
                let mut input = vec![ctl];
                input.extend((0..len).map(|i| (i * 7 + usize::from(ctl)) as u8));
                super::chunked_body(&input);
            }
        }
    }
}
