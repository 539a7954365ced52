//! Property tests over every SigV4 parser: arbitrary input never panics; what the signer signs, the
//! verifier accepts; and a change to any signed part is refused.

use http::{HeaderMap, HeaderValue};
use keyward_sigv4::sign::{presign, sign_headers, SigningParams};
use keyward_sigv4::{fuzzing, parse, Request, SecretKey, SignedRequest};
use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A path segment as a client would send it: unreserved characters and percent-escapes.
fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[A-Za-z0-9._~-]".prop_map(String::from),
            any::<u8>().prop_map(|b| format!("%{b:02X}")),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(("[A-Za-z][A-Za-z0-9.]{0,8}", segment()), 0..5).prop_map(|kv| {
        let mut seen = std::collections::HashSet::new();
        kv.into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn verify_at(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    secret: &SecretKey,
    now: SystemTime,
) -> Result<(), String> {
    let req = Request {
        method,
        path,
        query,
        headers,
    };
    match parse(&req).map_err(|e| e.message())? {
        Some(SignedRequest::V4(a)) => a
            .verify(&req, body, secret, now, None)
            .map(|_| ())
            .map_err(|e| e.message()),
        Some(SignedRequest::V2Presigned(a)) => a
            .verify(&req, secret, now)
            .map(|_| ())
            .map_err(|e| e.message()),
        None => Err("no signature".into()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn authorization_header_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::authorization_header(&data);
    }

    #[test]
    fn structured_authorization_header_never_panics(
        cred in "[A-Za-z0-9/_=-]{0,60}",
        signed in "[a-z0-9;-]{0,40}",
        sig in "[0-9a-fA-Fz]{0,70}",
        sep in prop_oneof![Just(", "), Just(","), Just(" "), Just(",,")],
    ) {
        let h = format!("AWS4-HMAC-SHA256 Credential={cred}{sep}SignedHeaders={signed}{sep}Signature={sig}");
        fuzzing::authorization_header(h.as_bytes());
    }

    #[test]
    fn presigned_query_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::presigned_query(&data);
    }

    #[test]
    fn structured_presigned_query_never_panics(
        date in "[0-9TZ]{0,17}",
        expires in "-?[0-9]{0,12}",
        cred in "[A-Za-z0-9%/_-]{0,60}",
        extra in query(),
    ) {
        let q = format!(
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00&{extra}\nhost:x"
        );
        fuzzing::presigned_query(q.as_bytes());
    }

    #[test]
    fn chunked_decoder_never_panics_and_signed_bodies_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..400)
    ) {
        // The harness asserts the round trip and the single-bit-flip refusal for inputs whose first
        // byte has its top bit set, and only feeds the decoder otherwise.
        fuzzing::chunked_body(&data);
    }

    #[test]
    fn sign_then_verify_and_any_change_fails(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        path in path(),
        query in query(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        secret in "[A-Za-z0-9/+]{40}",
        service in prop_oneof![Just("iam"), Just("sts"), Just("s3")],
        secs in 1_000_000_000u64..4_000_000_000,
        header_value in "[ -~]{0,20}",
    ) {
        let secret = SecretKey::new(secret);
        let time = UNIX_EPOCH + Duration::from_secs(secs);
        let params = SigningParams {
            access_key_id: KEY_ID,
            secret: &secret,
            session_token: None,
            region: "us-east-1",
            service,
            time,
        };
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-custom", HeaderValue::from_str(&header_value).unwrap());
        sign_headers(method, &path, &query, &mut headers, &body, &params);
        prop_assert_eq!(verify_at(method, &path, &query, &headers, &body, &secret, time), Ok(()));

        // Another method, path, query, header value, body or secret: refused.
        let other_method = if method == "GET" { "POST" } else { "GET" };
        prop_assert!(verify_at(other_method, &path, &query, &headers, &body, &secret, time).is_err());
        let other_path = format!("{path}x");
        prop_assert!(verify_at(method, &other_path, &query, &headers, &body, &secret, time).is_err());
        let other_query = if query.is_empty() { "a=1".to_owned() } else { format!("{query}&zz=1") };
        prop_assert!(verify_at(method, &path, &other_query, &headers, &body, &secret, time).is_err());
        let mut h2 = headers.clone();
        h2.insert("x-custom", HeaderValue::from_str(&format!("{header_value}!")).unwrap());
        prop_assert!(verify_at(method, &path, &query, &h2, &body, &secret, time).is_err());
        let mut b2 = body.clone();
        b2.push(b'!');
        prop_assert!(verify_at(method, &path, &query, &headers, &b2, &secret, time).is_err());
        let wrong = SecretKey::new("X".repeat(40));
        prop_assert!(verify_at(method, &path, &query, &headers, &body, &wrong, time).is_err());
        // And a clock 16 minutes off.
        let late = time + Duration::from_secs(16 * 60);
        prop_assert!(verify_at(method, &path, &query, &headers, &body, &secret, late).is_err());
    }

    #[test]
    fn presign_then_verify_and_any_signature_change_fails(
        path in path(),
        query in query(),
        secret in "[A-Za-z0-9/+]{40}",
        expires in 1u32..=604_800,
        secs in 1_000_000_000u64..4_000_000_000,
        flip in any::<prop::sample::Index>(),
    ) {
        let secret = SecretKey::new(secret);
        let time = UNIX_EPOCH + Duration::from_secs(secs);
        let params = SigningParams {
            access_key_id: KEY_ID,
            secret: &secret,
            session_token: None,
            region: "us-east-1",
            service: "s3",
            time,
        };
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("bucket.s3.amazonaws.com"));
        let q = presign("GET", &path, &query, &headers, expires, &params);
        prop_assert_eq!(verify_at("GET", &path, &q, &headers, b"", &secret, time), Ok(()));
        let after = time + Duration::from_secs(u64::from(expires) + 1);
        prop_assert!(verify_at("GET", &path, &q, &headers, b"", &secret, after).is_err());
        // Change one hex digit of the signature.
        let at = q.rfind("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let sig = &q[at..];
        let i = flip.index(sig.len());
        let c = sig.as_bytes()[i];
        let replacement = if c == b'0' { '1' } else { '0' };
        let mut bad = q.clone();
        bad.replace_range(at + i..at + i + 1, &replacement.to_string());
        prop_assert!(verify_at("GET", &path, &bad, &headers, b"", &secret, time).is_err());
    }
}
