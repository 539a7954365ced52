//! The edge cases that broke other servers (shared/reference/aws-auth-wire.md), one test each, plus the
//! signer round trip. Requests are signed with this crate's signer, which shares the verifier's
//! canonicalization and is itself checked against botocore and aws-sigv4 in the cross tests.

mod common;

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use keyward_sigv4::sign::{self, SigningParams};
use keyward_sigv4::{
    parse, parse_amz_date, ParseError, PayloadMode, Request, SecretKey, SignedRequest,
    SigningKeyCache, VerifyError,
};

fn secret() -> SecretKey {
    SecretKey::new(common::SECRET.into())
}

fn params<'a>(
    secret: &'a SecretKey,
    service: &'a str,
    token: Option<&'a str>,
) -> SigningParams<'a> {
    SigningParams {
        access_key_id: common::AKID,
        secret,
        session_token: token,
        region: "us-east-1",
        service,
        time: common::fixed_time(),
    }
}

fn host(h: &str) -> HeaderMap {
    let mut m = HeaderMap::new();
    m.insert("host", HeaderValue::from_str(h).unwrap());
    m
}

fn v4(req: &Request<'_>) -> keyward_sigv4::V4Auth {
    match parse(req).unwrap() {
        Some(SignedRequest::V4(a)) => a,
        other => panic!("{other:?}"),
    }
}

/// Verifies `req` as parsed into `a`, keeping the proof (which borrows from `a`).
fn verified<'a>(a: &'a keyward_sigv4::V4Auth, req: &Request<'_>) -> keyward_sigv4::Verified<'a> {
    a.verify(req, b"", &secret(), common::fixed_time(), None)
        .unwrap()
}

/// Verifies `req`; what the proof tells is checked where it matters, here only the outcome.
fn verify(req: &Request<'_>, body: &[u8]) -> Result<(), VerifyError> {
    v4(req)
        .verify(req, body, &secret(), common::fixed_time(), None)
        .map(drop)
}

#[test]
fn signer_round_trip_over_the_corpus_with_mutations() {
    let s = secret();
    let cache = SigningKeyCache::new(8);
    let mut n = 0;
    for shape in common::corpus() {
        let token = shape.token.then_some(common::TOKEN);
        let p = params(&s, shape.service, token);
        let (h, path, mut query) = common::split_url(shape.url);
        if !shape.raw_query.is_empty() {
            query = shape.raw_query.to_owned();
        }
        let mut headers = host(&h);
        for (k, v) in &shape.headers {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if shape.unsigned_payload {
            headers.insert(
                "x-amz-content-sha256",
                HeaderValue::from_static("UNSIGNED-PAYLOAD"),
            );
        }
        let mut signed = headers.clone();
        sign::sign_headers(
            shape.method,
            &path,
            &query,
            &mut signed,
            shape.body.as_bytes(),
            &p,
        );
        let w = common::Wire {
            method: shape.method.into(),
            path: path.clone(),
            query: query.clone(),
            headers: signed,
            body: shape.body.as_bytes().to_vec(),
        };
        common::check(shape.id, &w, &cache);
        let q = sign::presign(shape.method, &path, &query, &host(&h), 3600, &p);
        let w = common::Wire {
            method: shape.method.into(),
            path: path.clone(),
            query: q,
            headers: host(&h),
            body: vec![],
        };
        common::check(shape.id, &w, &cache);
        if shape.service == "s3" {
            let expires = common::fixed_time()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            let q = sign::presign_v2(shape.method, &path, &query, &HeaderMap::new(), expires, &p);
            let w = common::Wire {
                method: shape.method.into(),
                path,
                query: q,
                headers: host(&h),
                body: vec![],
            };
            common::check(shape.id, &w, &cache);
        }
        n += 1;
    }
    assert_eq!(n, common::corpus().len());
}

/// Edge case 1: `+` in an S3 path is a literal plus (`%2B`), never a space.
#[test]
fn plus_in_s3_path_is_literal() {
    let s = secret();
    let mut h = host("s3.amazonaws.com");
    sign::sign_headers(
        "GET",
        "/bucket/a+b",
        "",
        &mut h,
        b"",
        &params(&s, "s3", None),
    );
    let req = Request {
        method: "GET",
        path: "/bucket/a%2Bb",
        query: "",
        headers: &h,
    };
    verify(&req, b"").unwrap();
    let req = Request {
        method: "GET",
        path: "/bucket/a%20b",
        query: "",
        headers: &h,
    };
    assert!(verify(&req, b"").is_err());
}

/// Edge cases 1-3: non-S3 paths are normalized and double-encoded; S3 paths are used as sent.
#[test]
fn path_rules_differ_between_s3_and_other_services() {
    let s = secret();
    let mut h = host("iam.amazonaws.com");
    sign::sign_headers(
        "GET",
        "/a/./b//c/../d%3A",
        "",
        &mut h,
        b"",
        &params(&s, "iam", None),
    );
    // Same canonical URI after normalization.
    let req = Request {
        method: "GET",
        path: "/a/b/d%3A",
        query: "",
        headers: &h,
    };
    verify(&req, b"").unwrap();
    let mut h = host("s3.amazonaws.com");
    sign::sign_headers(
        "GET",
        "/b//k/./x/",
        "",
        &mut h,
        b"",
        &params(&s, "s3", None),
    );
    let req = Request {
        method: "GET",
        path: "/b//k/./x/",
        query: "",
        headers: &h,
    };
    verify(&req, b"").unwrap();
    let req = Request {
        method: "GET",
        path: "/b/k/x/",
        query: "",
        headers: &h,
    };
    assert!(verify(&req, b"").is_err());
}

/// Edge case 4: the host is signed as sent, port included; a proxy's host does not verify.
#[test]
fn host_with_port_is_signed_as_sent() {
    let s = secret();
    let mut h = host("127.0.0.1:9000");
    sign::sign_headers("GET", "/", "", &mut h, b"", &params(&s, "sts", None));
    verify(
        &Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
        },
        b"",
    )
    .unwrap();
    h.insert("host", HeaderValue::from_static("127.0.0.1"));
    assert!(verify(
        &Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &h
        },
        b""
    )
    .is_err());
}

/// Edge case 7: a key without a value canonicalizes as `key=`, so `?uploads` and `?uploads=` agree.
#[test]
fn query_key_without_value() {
    let s = secret();
    let mut h = host("s3.amazonaws.com");
    sign::sign_headers(
        "POST",
        "/b/k",
        "uploads",
        &mut h,
        b"",
        &params(&s, "s3", None),
    );
    verify(
        &Request {
            method: "POST",
            path: "/b/k",
            query: "uploads=",
            headers: &h,
        },
        b"",
    )
    .unwrap();
}

/// Edge case 8: a hex x-amz-content-sha256 is checked against the body received.
#[test]
fn content_sha256_must_match_the_body() {
    let s = secret();
    let mut h = host("s3.amazonaws.com");
    sign::sign_headers("PUT", "/b/k", "", &mut h, b"hello", &params(&s, "s3", None));
    let req = Request {
        method: "PUT",
        path: "/b/k",
        query: "",
        headers: &h,
    };
    verify(&req, b"hello").unwrap();
    match verify(&req, b"hellO") {
        Err(VerifyError::ContentSha256Mismatch { client, computed }) => {
            assert_eq!(
                client,
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            );
            assert_ne!(client, computed);
        }
        other => panic!("{other:?}"),
    }
    // Outside S3 a declared hash must match too.
    let mut h = host("sts.amazonaws.com");
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static(
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ),
    );
    sign::sign_headers("POST", "/", "", &mut h, b"hello", &params(&s, "sts", None));
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
    };
    verify(&req, b"hello").unwrap();
    assert!(matches!(
        verify(&req, b"bye"),
        Err(VerifyError::ContentSha256Mismatch { .. })
    ));
}

/// Edge case 10: presigned expiry runs from X-Amz-Date, independently of the 15-minute window, and
/// every signed header must be present.
#[test]
fn presigned_expiry_and_signed_headers() {
    let s = secret();
    let mut h = host("s3.amazonaws.com");
    h.insert("x-amz-meta-a", HeaderValue::from_static("1"));
    let q = sign::presign("GET", "/b/k", "", &h, 7200, &params(&s, "s3", None));
    let req = Request {
        method: "GET",
        path: "/b/k",
        query: &q,
        headers: &h,
    };
    let a = v4(&req);
    let t = common::fixed_time();
    a.verify(&req, b"", &s, t + Duration::from_secs(7200), None)
        .unwrap();
    let e = a
        .verify(&req, b"", &s, t + Duration::from_secs(7201), None)
        .unwrap_err();
    assert!(matches!(e, VerifyError::PresignedExpired { .. }));
    assert_eq!(e.message(), "Request has expired");
    let e = a
        .verify(&req, b"", &s, t - Duration::from_secs(16 * 60), None)
        .unwrap_err();
    assert!(matches!(e, VerifyError::PresignedNotYetValid { .. }));
    let only_host = host("s3.amazonaws.com");
    let req = Request {
        method: "GET",
        path: "/b/k",
        query: &q,
        headers: &only_host,
    };
    assert_eq!(
        a.verify(&req, b"", &s, t, None).unwrap_err(),
        VerifyError::SignedHeaderMissing("x-amz-meta-a".into())
    );
}

/// Only S3 honours X-Amz-Expires. STS (like every other service) holds a presigned request to the
/// 15-minute window of a signed header, whatever X-Amz-Expires asks for: a presigned
/// GetCallerIdentity with 60 seconds still works 10 minutes later, one with an hour no longer
/// after 15 minutes, and EKS-style tokens sent with `X-Amz-Expires=0` are taken.
#[test]
fn presigned_expiry_outside_s3_is_the_skew_window() {
    let s = secret();
    let h = host("sts.amazonaws.com");
    let t = common::fixed_time();
    let query = "Action=GetCallerIdentity&Version=2011-06-15";
    for expires in [0, 60, 3600, 604_800] {
        let q = sign::presign("GET", "/", query, &h, expires, &params(&s, "sts", None));
        let req = Request {
            method: "GET",
            path: "/",
            query: &q,
            headers: &h,
        };
        let a = v4(&req);
        for ok in [
            t,
            t + Duration::from_secs(10 * 60),
            t + Duration::from_secs(15 * 60),
        ] {
            a.verify(&req, b"", &s, ok, None).unwrap();
        }
        let e = a
            .verify(&req, b"", &s, t + Duration::from_secs(15 * 60 + 1), None)
            .unwrap_err();
        assert!(
            matches!(e, VerifyError::TooSkewed { future: false, .. }),
            "{expires}: {e:?}"
        );
        assert!(
            e.message().starts_with("Signature expired: "),
            "{}",
            e.message()
        );
        let e = a
            .verify(&req, b"", &s, t - Duration::from_secs(16 * 60), None)
            .unwrap_err();
        assert!(
            matches!(e, VerifyError::TooSkewed { future: true, .. }),
            "{expires}: {e:?}"
        );
    }
}

/// Edge case 11: a request that does not sign `host` is refused, even with a correct signature.
#[test]
fn host_must_be_signed() {
    let h = host("sts.amazonaws.com");
    let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240315%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240315T101112Z&X-Amz-Expires=60&X-Amz-SignedHeaders=x-amz-date&X-Amz-Signature=00";
    let req = Request {
        method: "GET",
        path: "/",
        query: q,
        headers: &h,
    };
    assert_eq!(verify(&req, b"").unwrap_err(), VerifyError::HostNotSigned);
}

/// Edge case 12: whatever SignedHeaders lists is verified, hop-by-hop headers included.
#[test]
fn old_clients_signing_hop_by_hop_headers_verify() {
    let s = secret();
    let mut h = host("sts.amazonaws.com");
    h.insert("user-agent", HeaderValue::from_static("aws-sdk-java/1.12"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    sign::sign_headers("POST", "/", "", &mut h, b"x", &params(&s, "sts", None));
    // Re-sign by hand listing them: the verifier takes SignedHeaders as sent.
    let a = v4(&Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
    });
    assert!(!a.signed_headers().contains("user-agent"));
    let e = verify(
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
        },
        b"x",
    );
    assert!(e.is_ok());
    let auth = h.get("authorization").unwrap().to_str().unwrap().replace(
        "SignedHeaders=host;x-amz-date",
        "SignedHeaders=host;transfer-encoding;user-agent;x-amz-date",
    );
    h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
    };
    match verify(&req, b"x") {
        Err(VerifyError::SignatureDoesNotMatch {
            canonical_request, ..
        }) => {
            assert!(canonical_request
                .contains("transfer-encoding:chunked\nuser-agent:aws-sdk-java/1.12\n"));
        }
        other => panic!("{other:?}"),
    }
}

/// AWS's clock-skew wording, both directions.
#[test]
fn skew_messages_match_aws() {
    let s = secret();
    let mut p = params(&s, "sts", None);
    p.time = parse_amz_date("20220127T001427Z").unwrap();
    let mut h = host("sts.amazonaws.com");
    sign::sign_headers("POST", "/", "", &mut h, b"", &p);
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
    };
    let a = v4(&req);
    let now = parse_amz_date("20220127T015928Z").unwrap();
    let e = a.verify(&req, b"", &s, now, None).unwrap_err();
    assert_eq!(
        e.message(),
        "Signature expired: 20220127T001427Z is now earlier than 20220127T014428Z (20220127T015928Z - 15 min.)"
    );
    let now = parse_amz_date("20220126T225900Z").unwrap();
    let e = a.verify(&req, b"", &s, now, None).unwrap_err();
    assert_eq!(
        e.message(),
        "Signature not yet current: 20220127T001427Z is still later than 20220126T231400Z (20220126T225900Z + 15 min.)"
    );
    // Exactly 15 minutes either way is accepted.
    a.verify(&req, b"", &s, p.time + Duration::from_secs(900), None)
        .unwrap();
    a.verify(&req, b"", &s, p.time - Duration::from_secs(900), None)
        .unwrap();
}

#[test]
fn session_token_and_verified_value() {
    let s = secret();
    let mut h = host("sts.amazonaws.com");
    sign::sign_headers(
        "POST",
        "/",
        "",
        &mut h,
        b"",
        &params(&s, "sts", Some(common::TOKEN)),
    );
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
    };
    let a = v4(&req);
    let v = verified(&a, &req);
    assert_eq!(v.session_token(), Some(common::TOKEN));
    assert_eq!(v.scope().unwrap().region(), "us-east-1");
    assert!(v.chunk_decoder().is_none());
    assert!(!format!("{v:?}").contains(common::TOKEN));
}

#[test]
fn signed_streaming_round_trip() {
    let s = secret();
    let p = params(&s, "s3", None);
    let mut h = host("s3.amazonaws.com");
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
    );
    h.insert(
        "x-amz-decoded-content-length",
        HeaderValue::from_static("10"),
    );
    let seed = sign::sign_headers("PUT", "/b/k", "", &mut h, b"", &p);
    let body = sign::aws_chunked_signed(b"0123456789", 4, &seed, None, &p);
    let req = Request {
        method: "PUT",
        path: "/b/k",
        query: "",
        headers: &h,
    };
    let a = v4(&req);
    let v = verified(&a, &req);
    let mut d = v.chunk_decoder().unwrap();
    d.feed(&body).unwrap();
    assert_eq!(d.take_data(), b"0123456789");
    d.finish().unwrap();
    // Chunks re-ordered or replayed from another request fail.
    let other = sign::aws_chunked_signed(b"0123456789", 4, &"0".repeat(64), None, &p);
    let mut d = v.chunk_decoder().unwrap();
    assert!(d.feed(&other).is_err());
    // Parse-level: the mode is exposed.
    let a = v4(&Request {
        method: "PUT",
        path: "/b/k",
        query: "",
        headers: &h,
    });
    assert_eq!(
        a.payload_mode(),
        PayloadMode::StreamingSigned { trailer: false }
    );
}

#[test]
fn no_auth_and_sigv4a() {
    let h = host("sts.amazonaws.com");
    assert!(parse(&Request {
        method: "GET",
        path: "/",
        query: "Action=GetCallerIdentity",
        headers: &h
    })
    .unwrap()
    .is_none());
    let mut h = h;
    h.insert("authorization", HeaderValue::from_static("AWS4-ECDSA-P256-SHA256 Credential=AKID/20240315/s3/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045"));
    h.insert("x-amz-region-set", HeaderValue::from_static("*"));
    let e = parse(&Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &h,
    })
    .unwrap_err();
    assert_eq!(e, ParseError::SigV4A { query: false });
}
