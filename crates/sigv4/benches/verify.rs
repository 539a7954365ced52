//! Verify cost of a typical header-signed STS GetCallerIdentity request with a warm key cache, and the
//! SHA-256 + HMAC work it cannot avoid. Run: `cargo bench -p keyward-sigv4 --bench verify`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use keyward_sigv4::sign::{sign_headers, SigningParams};
use keyward_sigv4::{parse, Request, SecretKey, SignedRequest, SigningKeyCache};
use sha2::{Digest, Sha256};

const BODY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";

fn sts_request(secret: &SecretKey) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("sts.amazonaws.com"));
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    h.insert(
        "user-agent",
        HeaderValue::from_static("aws-cli/2.15.0 Python/3.11.6 Linux/6.5 exe/x86_64"),
    );
    h.insert("content-length", HeaderValue::from_static("43"));
    let params = SigningParams {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret,
        session_token: None,
        region: "us-east-1",
        service: "sts",
        time: UNIX_EPOCH + Duration::from_secs(1_710_497_472),
    };
    sign_headers("POST", "/", "", &mut h, BODY, &params);
    h
}

fn bench(c: &mut Criterion) {
    let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
    let headers = sts_request(&secret);
    let now = UNIX_EPOCH + Duration::from_secs(1_710_497_500);
    let cache = SigningKeyCache::new(1024);
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
    };

    c.bench_function(
        "sts_get_caller_identity/parse+verify (warm key cache)",
        |b| {
            b.iter(|| {
                let req = black_box(&req);
                let Ok(Some(SignedRequest::V4(auth))) = parse(req) else {
                    panic!("parse")
                };
                let v = auth
                    .verify(req, black_box(BODY), &secret, now, Some(&cache))
                    .expect("verify");
                black_box(v);
            })
        },
    );
    let Ok(Some(SignedRequest::V4(auth))) = parse(&req) else {
        panic!("parse")
    };
    c.bench_function(
        "sts_get_caller_identity/verify only (warm key cache)",
        |b| {
            b.iter(|| {
                black_box(
                    auth.verify(black_box(&req), BODY, &secret, now, Some(&cache))
                        .expect("verify"),
                )
            })
        },
    );
    c.bench_function(
        "sts_get_caller_identity/verify (no cache: 4 extra HMACs)",
        |b| {
            b.iter(|| {
                black_box(
                    auth.verify(black_box(&req), BODY, &secret, now, None)
                        .expect("verify"),
                )
            })
        },
    );

    // The floor a warm-cache verify cannot avoid: sha256(body), sha256(canonical request of that size)
    // and HMAC(kSigning, string to sign); and the same with a second HMAC, the "two HMACs".
    let canonical = vec![b'x'; 330];
    let sts = vec![b'y'; 130];
    let key = [7u8; 32];
    let hmac = |data: &[u8]| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes()
    };
    c.bench_function("floor/sha256(body)+sha256(canonical)+1 HMAC", |b| {
        b.iter(|| {
            let h1 = Sha256::digest(black_box(BODY));
            let h2 = Sha256::digest(black_box(&canonical));
            black_box((h1, h2, hmac(black_box(&sts))))
        })
    });
    c.bench_function("floor/sha256(body)+sha256(canonical)+2 HMAC", |b| {
        b.iter(|| {
            let h1 = Sha256::digest(black_box(BODY));
            let h2 = Sha256::digest(black_box(&canonical));
            black_box((h1, h2, hmac(black_box(&sts)), hmac(black_box(&h2))))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
