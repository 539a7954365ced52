//! Shared corpus and checks for the cross-implementation tests: every signed request must verify, and
//! every single mutation of something it signs must fail.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use keyward_sigv4::{
    format_amz_date, parse, parse_amz_date, PayloadMode, Request, SecretKey, SignedRequest,
    SigningKeyCache,
};

pub const AKID: &str = "AKIDEXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const TOKEN: &str = "IQoJb3JpZ2luX2VjEPT//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+/abc=";

/// One request shape of the corpus.
#[derive(Clone, Debug)]
pub struct Shape {
    pub id: &'static str,
    pub service: &'static str,
    pub method: &'static str,
    /// scheme://authority/path (path percent-encoded as on the wire)
    pub url: &'static str,
    /// Query parameters (decoded); the signer encodes them.
    pub params: Vec<(&'static str, &'static str)>,
    /// A raw, already-encoded query string for shapes that carry one in the URL.
    pub raw_query: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
    pub token: bool,
    pub unsigned_payload: bool,
}

fn shape(
    id: &'static str,
    service: &'static str,
    method: &'static str,
    url: &'static str,
) -> Shape {
    Shape {
        id,
        service,
        method,
        url,
        params: vec![],
        raw_query: "",
        headers: vec![],
        body: "",
        token: false,
        unsigned_payload: false,
    }
}

/// The corpus: STS/IAM and S3, special characters and unicode in paths and query values, empty values,
/// repeated keys, `+`, `%2F`, spaces in header values, repeated headers, session tokens, ports.
pub fn corpus() -> Vec<Shape> {
    let form = (
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    );
    vec![
        Shape {
            headers: vec![form],
            body: "Action=GetCallerIdentity&Version=2011-06-15",
            ..shape(
                "sts-get-caller-identity",
                "sts",
                "POST",
                "https://sts.amazonaws.com/",
            )
        },
        Shape {
            params: vec![("Action", "ListUsers"), ("Version", "2010-05-08")],
            ..shape(
                "iam-list-users-get",
                "iam",
                "GET",
                "https://iam.amazonaws.com/",
            )
        },
        Shape {
            params: vec![
                ("k", "a b+c/d~e%f&g=h"),
                ("empty", ""),
                ("uni", "ሴ☃ü"),
                ("rep", "2"),
                ("rep", "1"),
                ("plus", "+"),
                ("slash", "%2F"),
                ("Tags.member.1.Key", "x y"),
            ],
            ..shape(
                "iam-special-query-port",
                "iam",
                "GET",
                "http://127.0.0.1:9000/",
            )
        },
        Shape {
            headers: vec![
                ("Content-Type", "application/json"),
                ("X-Amz-Meta-Spaced", "  a   b    c  "),
                ("X-Custom", "first"),
                ("X-Custom", "second  value"),
                ("X-Quoted", "\"a   b\""),
            ],
            body: "{\"k\": \"v\"}",
            ..shape(
                "execute-api-special-path",
                "execute-api",
                "POST",
                "http://localhost:8080/some%20path/a:b/%E1%88%B4/x+y/./z//w/../v%2Fw/",
            )
        },
        Shape {
            token: true,
            headers: vec![form],
            body: "Action=GetCallerIdentity&Version=2011-06-15",
            ..shape(
                "sts-session-token",
                "sts",
                "POST",
                "https://sts.us-west-2.amazonaws.com/",
            )
        },
        Shape {
            raw_query:
                "versionId=abc&response-content-type=text%2Fplain&prefix=a%20b%2Fc&empty=&uploads",
            ..shape(
                "s3-special-key",
                "s3",
                "GET",
                "https://s3.amazonaws.com/bucket/key%20with%20space/a%2Bb/%E2%98%83/x//y/./z/",
            )
        },
        Shape {
            headers: vec![
                ("Content-Type", "text/plain"),
                ("X-Amz-Meta-Spaced", "  x    y "),
                ("X-Amz-Meta-Rep", "one"),
                ("X-Amz-Meta-Rep", "two"),
            ],
            body: "hello world",
            ..shape(
                "s3-put-port",
                "s3",
                "PUT",
                "http://127.0.0.1:9000/bucket/obj%2Bplus%3Aa%40b",
            )
        },
        Shape {
            headers: vec![("Content-MD5", "XrY7u+Ae7tCTyyK7j1rNww==")],
            body: "hello world",
            unsigned_payload: true,
            ..shape(
                "s3-unsigned-payload",
                "s3",
                "PUT",
                "https://s3.amazonaws.com/bucket/unsigned",
            )
        },
        Shape {
            token: true,
            raw_query: "acl",
            ..shape(
                "s3-session-token",
                "s3",
                "GET",
                "https://bucket.s3.amazonaws.com/bucket/k",
            )
        },
    ]
}

/// A request as a server receives it.
#[derive(Clone, Debug)]
pub struct Wire {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Wire {
    pub fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
        }
    }
}

/// Splits a URL into the host header (default ports dropped, as clients do), path and query.
pub fn split_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = match (scheme, authority.rsplit_once(':')) {
        ("https", Some((h, "443"))) | ("http", Some((h, "80"))) => h.to_owned(),
        _ => authority.to_owned(),
    };
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    (host, path.to_owned(), query.to_owned())
}

pub fn wire(method: &str, url: &str, headers: &[(String, String)], body: Vec<u8>) -> Wire {
    let (host, path, query) = split_url(url);
    let mut map = HeaderMap::new();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        map.insert("host", HeaderValue::from_str(&host).unwrap());
    }
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    Wire {
        method: method.to_owned(),
        path,
        query,
        headers: map,
        body,
    }
}

/// What a verification covers, to know which mutations must fail.
pub struct Outcome {
    pub presigned: bool,
    pub v2: bool,
    pub body_covered: bool,
    pub signed_headers: Vec<String>,
}

/// Parses and verifies with `now` = the request's own time (SigV4) or an hour before `Expires` (SigV2).
pub fn verify(w: &Wire, cache: &SigningKeyCache) -> Result<Outcome, String> {
    let secret = SecretKey::new(SECRET.into());
    let req = w.request();
    match parse(&req).map_err(|e| format!("parse: {e:?}"))? {
        None => Err("no authentication".into()),
        Some(SignedRequest::V4(a)) => {
            let v = a
                .verify(&req, &w.body, &secret, a.time(), Some(cache))
                .map_err(|e| format!("verify: {e:?}"))?;
            assert_eq!(v.access_key_id(), AKID);
            assert_eq!(v.session_token(), a.session_token());
            Ok(Outcome {
                presigned: a.is_presigned(),
                v2: false,
                body_covered: matches!(
                    a.payload_mode(),
                    PayloadMode::Hex(_) | PayloadMode::Computed
                ),
                signed_headers: a.signed_headers().split(';').map(str::to_owned).collect(),
            })
        }
        Some(SignedRequest::V2Presigned(a)) => {
            let now = UNIX_EPOCH + Duration::from_secs(a.expires_epoch().saturating_sub(3600));
            let v = a
                .verify(&req, &secret, now)
                .map_err(|e| format!("verify v2: {e:?}"))?;
            assert_eq!(v.access_key_id(), AKID);
            Ok(Outcome {
                presigned: true,
                v2: true,
                body_covered: false,
                signed_headers: vec![],
            })
        }
    }
}

fn shift_date(s: &str) -> String {
    match parse_amz_date(s) {
        Some(t) => format_amz_date(t + Duration::from_secs(1)),
        None => format!("{s}0"),
    }
}

fn flip_last(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if let Some(c) = chars.last_mut() {
        *c = if *c == '0' { '1' } else { '0' };
    }
    chars.into_iter().collect()
}

fn map_query(query: &str, f: impl Fn(&str, &str) -> Option<String>) -> String {
    query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            f(k, v).unwrap_or_else(|| p.to_owned())
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Every single mutation of what the request signs, each expected to fail.
pub fn mutations(w: &Wire, o: &Outcome) -> Vec<(String, Wire)> {
    let mut out = Vec::new();
    let mut m = w.clone();
    m.method = if w.method == "PATCH" {
        "PUT".into()
    } else {
        "PATCH".into()
    };
    out.push(("method".into(), m));
    let mut m = w.clone();
    m.path.push('x');
    out.push(("path".into(), m));
    let mut m = w.clone();
    let extra = if o.v2 { "acl" } else { "mutated=1" };
    m.query = if w.query.is_empty() {
        extra.into()
    } else {
        format!("{}&{extra}", w.query)
    };
    out.push(("query: added parameter".into(), m));
    if !o.v2 {
        for piece in w.query.split('&').filter(|p| !p.is_empty()) {
            let key = piece.split_once('=').map_or(piece, |(k, _)| k);
            if key == "X-Amz-Signature" {
                continue;
            }
            let mut m = w.clone();
            m.query = map_query(&w.query, |k, v| (k == key).then(|| format!("{k}={v}0")));
            out.push((format!("query value of {key}"), m));
        }
    } else {
        let mut m = w.clone();
        m.query = map_query(&w.query, |k, v| {
            (k == "Expires").then(|| format!("{k}={}", v.parse::<u64>().unwrap() + 1))
        });
        out.push(("Expires".into(), m));
        let mut m = w.clone();
        // Another first character (a signature that already starts with `A`, one run in 64,
        // made this "mutation" a copy that rightly verified).
        m.query = map_query(&w.query, |k, v| {
            (k == "Signature").then(|| {
                let first = if v.starts_with('A') { 'B' } else { 'A' };
                format!("{k}={first}{}", &v[1..])
            })
        });
        out.push(("signature".into(), m));
    }
    for name in &o.signed_headers {
        let mut m = w.clone();
        let values: Vec<HeaderValue> = m.headers.get_all(name.as_str()).iter().cloned().collect();
        m.headers.remove(name.as_str());
        for (i, v) in values.iter().enumerate() {
            let mut s = v.as_bytes().to_vec();
            if i == 0 {
                s.push(b'z');
            }
            m.headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(&s).unwrap(),
            );
        }
        out.push((format!("signed header {name}"), m));
        let mut m = w.clone();
        m.headers.remove(name.as_str());
        out.push((format!("signed header {name} removed"), m));
    }
    if o.body_covered {
        let mut m = w.clone();
        m.body.push(b'!');
        out.push(("body".into(), m));
    }
    if !o.presigned {
        let mut m = w.clone();
        let d = m
            .headers
            .get("x-amz-date")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        m.headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&shift_date(&d)).unwrap(),
        );
        out.push(("date".into(), m));
        let mut m = w.clone();
        let a = m
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        m.headers.insert(
            "authorization",
            HeaderValue::from_str(&flip_last(&a)).unwrap(),
        );
        out.push(("signature".into(), m));
    } else if !o.v2 {
        let mut m = w.clone();
        m.query = map_query(&w.query, |k, v| {
            (k == "X-Amz-Date").then(|| format!("{k}={}", shift_date(v)))
        });
        out.push(("date".into(), m));
        let mut m = w.clone();
        m.query = map_query(&w.query, |k, v| {
            (k == "X-Amz-Signature").then(|| format!("{k}={}", flip_last(v)))
        });
        out.push(("signature".into(), m));
    }
    out
}

/// Verifies `w` and checks that every mutation fails; returns the number of mutations tried.
pub fn check(id: &str, w: &Wire, cache: &SigningKeyCache) -> usize {
    let o = verify(w, cache)
        .unwrap_or_else(|e| panic!("{id}: signed request does not verify: {e}\n{w:#?}"));
    let muts = mutations(w, &o);
    for (what, m) in &muts {
        assert!(
            verify(m, cache).is_err(),
            "{id}: mutation of {what} still verifies\n{m:#?}"
        );
    }
    if !o.body_covered && !o.v2 {
        // Documented semantics: an unsigned payload does not cover the body.
        let mut m = w.clone();
        m.body.extend_from_slice(b"unsigned");
        assert!(verify(&m, cache).is_ok(), "{id}: unsigned payload");
    }
    muts.len()
}

/// The `now` an SDK-signed request is checked at when its time is not at hand.
pub fn fixed_time() -> SystemTime {
    parse_amz_date("20240315T101112Z").unwrap()
}
