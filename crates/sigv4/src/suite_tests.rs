//! The public AWS SigV4 signing test suite (vendored under `tests/data/v4`, Apache-2.0, see its NOTICE)
//! and AWS documentation examples: canonical request, string to sign and signature are checked against
//! the published values through the internal functions, and the signed requests verify through the
//! public API.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::canonical::{canonical_request, sha256_hex, string_to_sign, CanonicalParts, PathMode};
use crate::key::{SigningKey, SlottedSecret};
use crate::{
    parse, parse_amz_date, Request, SecretKey, SignedRequest, SigningKeyCache, VerifyError,
};

struct HttpRequest {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpRequest {
    fn as_request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
        }
    }
}

/// Parses the suite's `request.txt` format: request line, `Name:value` lines (indented lines continue
/// the previous value), an empty line, the body.
fn parse_http(text: &str) -> HttpRequest {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let (method, rest) = request_line.split_once(' ').unwrap();
    let target = rest.strip_suffix(" HTTP/1.1").unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut raw: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = raw.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (n, v) = line.split_once(':').unwrap();
            raw.push((n.to_owned(), v.trim_start().to_owned()));
        }
    }
    let mut headers = HeaderMap::new();
    for (n, v) in raw {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    let mut body = body.as_bytes().to_vec();
    if let Some(len) = headers.get("content-length") {
        body.truncate(len.to_str().unwrap().parse().unwrap());
    }
    HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    }
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v4")
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

struct Context {
    akid: String,
    secret: SecretKey,
    token: Option<String>,
    omit_token: bool,
    region: String,
    service: String,
    normalize: bool,
    sign_body: bool,
    expires: u64,
    time: SystemTime,
    amz_date: String,
}

fn context(dir: &Path) -> Context {
    let json = read(dir, "context.json").unwrap_or_else(|| {
        // The two migrated cases have no context.json: they are lambda requests from the aws-sigv4 tests.
        r#"{"credentials":{"access_key_id":"AKIDEXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
            "expiration_in_seconds":3600,"normalize":true,"region":"us-east-2","service":"lambda","sign_body":false,
            "timestamp":"2021-05-11T15:40:45Z"}"#
            .to_owned()
    });
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ts = v["timestamp"].as_str().unwrap().replace(['-', ':'], "");
    Context {
        akid: v["credentials"]["access_key_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        secret: SecretKey::new(
            v["credentials"]["secret_access_key"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
        token: v["credentials"]["token"].as_str().map(str::to_owned),
        omit_token: v["omit_session_token"].as_bool().unwrap_or(false),
        region: v["region"].as_str().unwrap().to_owned(),
        service: v["service"].as_str().unwrap().to_owned(),
        normalize: v["normalize"].as_bool().unwrap(),
        sign_body: v["sign_body"].as_bool().unwrap(),
        expires: v["expiration_in_seconds"].as_u64().unwrap(),
        time: parse_amz_date(&ts).unwrap(),
        amz_date: ts,
    }
}

fn expected(dir: &Path, name: &str) -> Option<String> {
    read(dir, name).map(|s| s.trim_end_matches('\n').to_owned())
}

fn scope(c: &Context) -> String {
    format!(
        "{}/{}/{}/aws4_request",
        &c.amz_date[..8],
        c.region,
        c.service
    )
}

fn check_header_form(name: &str, dir: &Path, c: &Context, req: &HttpRequest) -> usize {
    let mut headers = req.headers.clone();
    headers.insert("x-amz-date", HeaderValue::from_str(&c.amz_date).unwrap());
    if let (Some(t), false) = (&c.token, c.omit_token) {
        headers.insert("x-amz-security-token", HeaderValue::from_str(t).unwrap());
    }
    let payload = sha256_hex(&req.body);
    if c.sign_body {
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(&payload).unwrap(),
        );
    }
    let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let signed = names.join(";");
    let cr = canonical_request(&CanonicalParts {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &headers,
        signed_headers: &signed,
        path_mode: if c.normalize {
            PathMode::Normalized
        } else {
            PathMode::Unnormalized
        },
        presigned: false,
        payload_hash: &payload,
    })
    .unwrap();
    let mut checks = 0;
    if let Some(want) = expected(dir, "header-canonical-request.txt") {
        assert_eq!(
            String::from_utf8(cr.clone()).unwrap(),
            want,
            "{name}: header canonical request"
        );
        checks += 1;
    }
    let sts = string_to_sign(&c.amz_date, &scope(c), &cr);
    if let Some(want) = expected(dir, "header-string-to-sign.txt") {
        assert_eq!(sts, want, "{name}: header string to sign");
        checks += 1;
    }
    let sig =
        SigningKey::derive(&c.secret, &c.amz_date[..8], &c.region, &c.service).sign(sts.as_bytes());
    if let Some(want) = expected(dir, "header-signature.txt") {
        assert_eq!(sig, want, "{name}: header signature");
        checks += 1;
    }
    checks
}

fn check_query_form(name: &str, dir: &Path, c: &Context, req: &HttpRequest) -> usize {
    let mut names: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let signed = names.join(";");
    let cred = format!("{}/{}", c.akid, scope(c)).replace('/', "%2F");
    let mut query = format!(
        "{}X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}&X-Amz-Date={}&X-Amz-Expires={}&X-Amz-SignedHeaders={}",
        if req.query.is_empty() { String::new() } else { format!("{}&", req.query) },
        c.amz_date,
        c.expires,
        signed.replace(';', "%3B")
    );
    if let (Some(t), false) = (&c.token, c.omit_token) {
        let mut enc = Vec::new();
        crate::canonical::uri_encode(t.as_bytes(), false, &mut enc);
        query.push_str("&X-Amz-Security-Token=");
        query.push_str(std::str::from_utf8(&enc).unwrap());
    }
    let payload = sha256_hex(&req.body);
    let cr = canonical_request(&CanonicalParts {
        method: &req.method,
        path: &req.path,
        query: &query,
        headers: &req.headers,
        signed_headers: &signed,
        path_mode: if c.normalize {
            PathMode::Normalized
        } else {
            PathMode::Unnormalized
        },
        presigned: true,
        payload_hash: &payload,
    })
    .unwrap();
    let mut checks = 0;
    if let Some(want) = expected(dir, "query-canonical-request.txt") {
        assert_eq!(
            String::from_utf8(cr.clone()).unwrap(),
            want,
            "{name}: query canonical request"
        );
        checks += 1;
    }
    let sts = string_to_sign(&c.amz_date, &scope(c), &cr);
    if let Some(want) = expected(dir, "query-string-to-sign.txt") {
        assert_eq!(sts, want, "{name}: query string to sign");
        checks += 1;
    }
    let sig =
        SigningKey::derive(&c.secret, &c.amz_date[..8], &c.region, &c.service).sign(sts.as_bytes());
    if let Some(want) = expected(dir, "query-signature.txt") {
        assert_eq!(sig, want, "{name}: query signature");
        checks += 1;
    }
    checks
}

/// The signed request the suite publishes verifies through the public API (non-S3 rules apply, so only
/// the `normalize: true` cases).
fn verify_signed(name: &str, dir: &Path, file: &str, c: &Context, cache: &SigningKeyCache) -> bool {
    let Some(text) = read(dir, file) else {
        return false;
    };
    let req = parse_http(&text);
    let auth = parse(&req.as_request()).unwrap_or_else(|e| panic!("{name} {file}: {e:?}"));
    let Some(SignedRequest::V4(auth)) = auth else {
        panic!("{name} {file}: no v4 auth")
    };
    assert_eq!(auth.access_key_id(), c.akid);
    auth.verify(&req.as_request(), &req.body, &c.secret, c.time, Some(cache))
        .unwrap_or_else(|e| panic!("{name} {file}: {e:?}"));
    // The same through a secret with its own slot, cold then warm.
    let slotted = SlottedSecret::new(c.secret.clone());
    for _ in 0..2 {
        auth.verify_slotted(&req.as_request(), &req.body, &slotted, c.time)
            .unwrap_or_else(|e| panic!("{name} {file} (slotted): {e:?}"));
    }
    let wrong_slotted = SlottedSecret::new(SecretKey::new("not-the-secret".into()));
    assert!(auth
        .verify_slotted(&req.as_request(), &req.body, &wrong_slotted, c.time)
        .is_err());
    // And a wrong secret fails, showing the canonical request the server computed.
    let wrong = SecretKey::new("not-the-secret".into());
    match auth.verify(&req.as_request(), &req.body, &wrong, c.time, Some(cache)) {
        Err(VerifyError::SignatureDoesNotMatch {
            canonical_request,
            string_to_sign,
            ..
        }) => {
            if let Some(want) = expected(dir, &file.replace("signed-request", "string-to-sign")) {
                assert_eq!(string_to_sign, want, "{name} {file}");
            }
            assert!(!canonical_request.contains("not-the-secret"));
        }
        other => panic!("{name} {file}: {other:?}"),
    }
    true
}

#[test]
fn aws_signing_test_suite_v4() {
    let cache = SigningKeyCache::new(16);
    let mut cases = 0;
    let mut checks = 0;
    let mut verified = 0;
    let mut entries: Vec<_> = std::fs::read_dir(suite_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let c = context(&dir);
        let req = parse_http(&read(&dir, "request.txt").unwrap());
        if name == "get-space-normalized" {
            // The suite generated this case with double encoding off (aws-sigv4 ignores it for the same
            // reason): it expects `%20`, but AWS services other than S3 sign `%2520` for a `%20` on the wire.
            let mut uri = Vec::new();
            crate::canonical::canonical_uri(&req.path, PathMode::Normalized, &mut uri);
            assert_eq!(uri, b"/example%2520space/");
            cases += 1;
            continue;
        }
        checks += check_header_form(&name, &dir, &c, &req);
        checks += check_query_form(&name, &dir, &c, &req);
        if c.normalize && dir.join("context.json").exists() {
            verified += usize::from(verify_signed(
                &name,
                &dir,
                "header-signed-request.txt",
                &c,
                &cache,
            ));
            if !c.omit_token {
                verified += usize::from(verify_signed(
                    &name,
                    &dir,
                    "query-signed-request.txt",
                    &c,
                    &cache,
                ));
            }
        }
        cases += 1;
    }
    assert_eq!(cases, 40);
    assert!(checks >= 220, "only {checks} checks");
    assert!(verified >= 59, "only {verified} verified");
    eprintln!("test suite: {cases} cases, {checks} published values matched, {verified} signed requests verified");
}

// --- AWS documentation examples -------------------------------------------------------------------

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[allow(clippy::too_many_arguments)]
fn doc_case(
    method: &str,
    path: &str,
    query: &str,
    h: &HeaderMap,
    signed: &str,
    mode: PathMode,
    payload: &str,
    amz_date: &str,
    scope: &str,
    secret: &str,
    want_cr: &str,
    want_sig: &str,
) {
    let cr = canonical_request(&CanonicalParts {
        method,
        path,
        query,
        headers: h,
        signed_headers: signed,
        path_mode: mode,
        presigned: query.contains("X-Amz-Signature") || query.contains("X-Amz-Credential"),
        payload_hash: payload,
    })
    .unwrap();
    assert_eq!(String::from_utf8(cr.clone()).unwrap(), want_cr);
    let sts = string_to_sign(amz_date, scope, &cr);
    let parts: Vec<&str> = scope.split('/').collect();
    let sig = SigningKey::derive(&SecretKey::new(secret.into()), parts[0], parts[1], parts[2])
        .sign(sts.as_bytes());
    assert_eq!(sig, want_sig);
}

const DOC_SECRET_IAM: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DOC_SECRET_S3: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[test]
fn iam_list_users_documentation_example() {
    let h = headers(&[
        ("host", "iam.amazonaws.com"),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("x-amz-date", "20150830T123600Z"),
    ]);
    doc_case(
        "GET",
        "/",
        "Action=ListUsers&Version=2010-05-08",
        &h,
        "content-type;host;x-amz-date",
        PathMode::Normalized,
        crate::canonical::EMPTY_SHA256,
        "20150830T123600Z",
        "20150830/us-east-1/iam/aws4_request",
        DOC_SECRET_IAM,
        "GET\n/\nAction=ListUsers&Version=2010-05-08\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    );
    // Through the public API.
    let mut h = h;
    h.insert("authorization", HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"));
    let req = Request {
        method: "GET",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        headers: &h,
    };
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    let v = a
        .verify(
            &req,
            b"",
            &SecretKey::new(DOC_SECRET_IAM.into()),
            parse_amz_date("20150830T123600Z").unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(v.access_key_id(), "AKIDEXAMPLE");
    assert_eq!(v.scope().unwrap().service(), "iam");
}

#[test]
fn s3_get_object_documentation_example() {
    let h = headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", crate::canonical::EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]);
    doc_case(
        "GET",
        "/test.txt",
        "",
        &h,
        "host;range;x-amz-content-sha256;x-amz-date",
        PathMode::S3,
        crate::canonical::EMPTY_SHA256,
        "20130524T000000Z",
        "20130524/us-east-1/s3/aws4_request",
        DOC_SECRET_S3,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    );
    let mut h = h;
    h.insert("authorization", HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: "",
        headers: &h,
    };
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    a.verify(
        &req,
        b"",
        &SecretKey::new(DOC_SECRET_S3.into()),
        parse_amz_date("20130524T000000Z").unwrap(),
        None,
    )
    .unwrap();
}

#[test]
fn s3_presigned_url_documentation_example() {
    let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: q,
        headers: &h,
    };
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    let t0 = parse_amz_date("20130524T000000Z").unwrap();
    let secret = SecretKey::new(DOC_SECRET_S3.into());
    a.verify(
        &req,
        b"",
        &secret,
        t0 + std::time::Duration::from_secs(86_400),
        None,
    )
    .unwrap();
    let e = a
        .verify(
            &req,
            b"",
            &secret,
            t0 + std::time::Duration::from_secs(86_401),
            None,
        )
        .unwrap_err();
    assert!(matches!(e, VerifyError::PresignedExpired { .. }));
}

#[test]
fn s3_chunked_upload_documentation_example() {
    let h = headers(&[
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"),
    ]);
    let req = Request {
        method: "PUT",
        path: "/examplebucket/chunkObject.txt",
        query: "",
        headers: &h,
    };
    let Some(SignedRequest::V4(a)) = parse(&req).unwrap() else {
        panic!()
    };
    let secret = SecretKey::new(DOC_SECRET_S3.into());
    let v = a
        .verify(
            &req,
            b"",
            &secret,
            parse_amz_date("20130524T000000Z").unwrap(),
            None,
        )
        .unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n");
    body.extend_from_slice(&[b'a'; 65536]);
    body.extend_from_slice(b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
    body.extend_from_slice(&[b'a'; 1024]);
    body.extend_from_slice(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
    assert_eq!(body.len(), 66824);
    // Fed in awkward pieces: the decoder is incremental.
    for piece in [1usize, 7, 100, 4096, 70_000] {
        let mut d = v.chunk_decoder().unwrap();
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            d.feed(part).unwrap();
            out.extend(d.take_data());
        }
        assert!(d.is_done());
        assert!(d.finish().unwrap().is_empty());
        assert_eq!(out, vec![b'a'; 66560]);
    }
    // Any flipped byte fails somewhere.
    for pos in [0usize, 30, 90, 100, 65_600, 65_700, 66_700, 66_800] {
        let mut bad = body.clone();
        bad[pos] ^= 1;
        let mut d = v.chunk_decoder().unwrap();
        let r = d.feed(&bad).and_then(|()| d.finish().map(|_| ()));
        assert!(r.is_err(), "flip at {pos} accepted");
    }
    // Truncation is refused at finish.
    let mut d = v.chunk_decoder().unwrap();
    d.feed(&body[..body.len() - 2]).unwrap();
    assert_eq!(d.finish().unwrap_err(), crate::ChunkError::Truncated);
}
