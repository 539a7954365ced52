//! The one canonicalization used by both the verifier and the signer: canonical URI, canonical query,
//! canonical headers, canonical request and string to sign.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// `AWS4-HMAC-SHA256`, the SigV4 algorithm name.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The SigV4A algorithm name, recognised only to be refused.
pub(crate) const ALGORITHM_V4A: &str = "AWS4-ECDSA-P256-SHA256";
/// Hex SHA-256 of the empty string.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// How the path becomes the canonical URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathMode {
    /// S3: the wire path as sent, not normalized; every `%XX` is decoded and the byte encoded once
    /// again (so `%2f` and `%2F` both stay `%2F`, a raw `+` becomes `%2B`, `//` stays).
    S3,
    /// Every other service: remove `.`/`..` segments and collapse `//`, then encode the wire path
    /// once more, so `%20` on the wire becomes `%2520`.
    Normalized,
    /// Encode the wire path once more without normalizing (the test suite's `normalize: false`).
    #[cfg(test)]
    Unnormalized,
}

impl PathMode {
    /// The mode AWS uses for a credential-scope service name.
    pub(crate) fn for_service(service: &str) -> Self {
        if service == "s3" {
            PathMode::S3
        } else {
            PathMode::Normalized
        }
    }
}

#[inline]
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[inline]
fn push_encoded(b: u8, out: &mut Vec<u8>) {
    if is_unreserved(b) {
        out.push(b);
    } else {
        out.extend_from_slice(&[
            b'%',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 15)],
        ]);
    }
}

/// Percent-encodes every byte except `A-Za-z0-9-_.~` (and `/` when `keep_slash`), uppercase hex.
pub(crate) fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut Vec<u8>) {
    for &b in bytes {
        if keep_slash && b == b'/' {
            out.push(b'/');
        } else {
            push_encoded(b, out);
        }
    }
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits is kept literally); with `plus_is_space`
/// a `+` decodes to a space (query strings), otherwise it stays a `+` (paths).
pub(crate) fn percent_decode(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => {
                if let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The canonical URI of a wire path.
pub(crate) fn canonical_uri(path: &str, mode: PathMode, out: &mut Vec<u8>) {
    let path = path.as_bytes();
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    match mode {
        PathMode::S3 => {
            let mut i = 0;
            while i < path.len() {
                let b = path[i];
                if b == b'%' && i + 2 < path.len() {
                    if let (Some(h), Some(l)) = (hex_val(path[i + 1]), hex_val(path[i + 2])) {
                        push_encoded(h << 4 | l, out);
                        i += 3;
                        continue;
                    }
                }
                if b == b'/' {
                    out.push(b'/');
                } else {
                    push_encoded(b, out);
                }
                i += 1;
            }
        }
        PathMode::Normalized => {
            if needs_normalization(path) {
                uri_encode(&normalize_path(path), true, out);
            } else {
                uri_encode(path, true, out);
            }
        }
        #[cfg(test)]
        PathMode::Unnormalized => uri_encode(path, true, out),
    }
}

/// Whether [`normalize_path`] would change `path`: an empty, `.` or `..` segment, or no leading `/`.
fn needs_normalization(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return true;
    };
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if matches!(seg, b"." | b"..") || (seg.is_empty() && !last) {
            return true;
        }
    }
    false
}

/// RFC 3986 remove-dot-segments plus collapsing of empty segments, as botocore and AWS do for every
/// service but S3. A trailing `/` is kept when something is left.
pub(crate) fn normalize_path(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if path.last() == Some(&b'/') && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

/// `s.split(sep)` for an ASCII `sep`, by a plain byte scan: on the short pieces of a signature
/// (credential, signed headers, query pairs) the generic char searcher costs more than the scan.
pub(crate) fn split_ascii(s: &str, sep: u8) -> SplitAscii<'_> {
    debug_assert!(sep.is_ascii());
    SplitAscii { rest: Some(s), sep }
}

/// `s.split_once(sep)` for an ASCII `sep`, by a plain byte scan.
pub(crate) fn split_once_ascii(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = find_byte(s.as_bytes(), sep)?;
    // `sep` is ASCII, so both sides are on character boundaries.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// The first position of `b` in `s`, eight bytes at a time: a signature's pieces are up to ~100
/// bytes (credential, signature), where a byte loop cost a third of parsing an Authorization.
pub(crate) fn find_byte(s: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(b);
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A byte of `x` is zero where `b` is; the lowest flagged byte is exact (only bytes above a
        // true zero can be flagged falsely).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b)
        .map(|i| at + i)
}

/// The iterator of [`split_ascii`].
pub(crate) struct SplitAscii<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match split_once_ascii(s, self.sep) {
            Some((piece, rest)) => {
                self.rest = Some(rest);
                Some(piece)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// Splits a raw query string into raw `(key, value)` pieces; empty pieces are skipped and a piece
/// without `=` has an empty value.
pub(crate) fn split_query(query: &str) -> impl Iterator<Item = (&str, &str)> {
    split_ascii(query, b'&')
        .filter(|p| !p.is_empty())
        .map(|p| split_once_ascii(p, b'=').unwrap_or((p, "")))
}

/// The canonical query string: each key and value decoded (`+` is a space) and encoded again, pairs
/// sorted by encoded key then encoded value. With `skip_signature`, `X-Amz-Signature` is left out.
pub(crate) fn canonical_query(query: &str, skip_signature: bool, out: &mut Vec<u8>) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in split_query(query) {
        let k = percent_decode(k.as_bytes(), true);
        if skip_signature && k == b"X-Amz-Signature" {
            continue;
        }
        let v = percent_decode(v.as_bytes(), true);
        let mut ek = Vec::with_capacity(k.len());
        uri_encode(&k, false, &mut ek);
        let mut ev = Vec::with_capacity(v.len());
        uri_encode(&v, false, &mut ev);
        pairs.push((ek, ev));
    }
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

/// Appends a header value trimmed of spaces and tabs, with inner runs collapsed to one space.
/// Quotes get no special treatment.
pub(crate) fn push_trimmed_value(value: &[u8], out: &mut Vec<u8>) {
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        if b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            started = true;
        }
    }
}

/// Everything that goes into a canonical request.
pub(crate) struct CanonicalParts<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    /// The `SignedHeaders` value as the client sent it (`;`-separated lowercase names).
    pub(crate) signed_headers: &'a str,
    pub(crate) path_mode: PathMode,
    /// Leave `X-Amz-Signature` out of the query (presigned requests).
    pub(crate) presigned: bool,
    pub(crate) payload_hash: &'a str,
}

/// Builds the canonical request. Fails with the name of the first signed header absent from `headers`.
pub(crate) fn canonical_request(p: &CanonicalParts<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256 + p.path.len() + p.query.len());
    out.extend_from_slice(p.method.as_bytes());
    out.push(b'\n');
    canonical_uri(p.path, p.path_mode, &mut out);
    out.push(b'\n');
    canonical_query(p.query, p.presigned, &mut out);
    out.push(b'\n');
    for name in split_ascii(p.signed_headers, b';') {
        let values = match known_header(name) {
            Some(known) => p.headers.get_all(known),
            None => p.headers.get_all(name),
        };
        let mut values = values.iter().peekable();
        if values.peek().is_none() {
            return Err(name.to_owned());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed_value(v.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(p.signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(p.payload_hash.as_bytes());
    Ok(out)
}

/// `x-amz-date`, as a ready header name: looking one up by `&str` parses the name every time.
pub(crate) static X_AMZ_DATE: http::HeaderName = http::HeaderName::from_static("x-amz-date");
/// `x-amz-security-token`.
pub(crate) static X_AMZ_SECURITY_TOKEN: http::HeaderName =
    http::HeaderName::from_static("x-amz-security-token");
/// `x-amz-content-sha256`.
pub(crate) static X_AMZ_CONTENT_SHA256: http::HeaderName =
    http::HeaderName::from_static("x-amz-content-sha256");

/// The headers clients sign most, as ready names: looking one up by `&str` parses and
/// classifies the name first, which cost as much as the lookup itself.
fn known_header(name: &str) -> Option<&'static http::HeaderName> {
    use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RANGE, USER_AGENT};
    static X_AMZ_TARGET: http::HeaderName = http::HeaderName::from_static("x-amz-target");
    static X_AMZ_USER_AGENT: http::HeaderName = http::HeaderName::from_static("x-amz-user-agent");
    static AMZ_SDK_INVOCATION_ID: http::HeaderName =
        http::HeaderName::from_static("amz-sdk-invocation-id");
    static AMZ_SDK_REQUEST: http::HeaderName = http::HeaderName::from_static("amz-sdk-request");
    static CONTENT_MD5: http::HeaderName = http::HeaderName::from_static("content-md5");
    Some(match name {
        "host" => &HOST,
        "x-amz-date" => &X_AMZ_DATE,
        "content-type" => &CONTENT_TYPE,
        "x-amz-content-sha256" => &X_AMZ_CONTENT_SHA256,
        "x-amz-security-token" => &X_AMZ_SECURITY_TOKEN,
        "x-amz-target" => &X_AMZ_TARGET,
        "content-length" => &CONTENT_LENGTH,
        "content-md5" => &CONTENT_MD5,
        "range" => &RANGE,
        "user-agent" => &USER_AGENT,
        "x-amz-user-agent" => &X_AMZ_USER_AGENT,
        "amz-sdk-invocation-id" => &AMZ_SDK_INVOCATION_ID,
        "amz-sdk-request" => &AMZ_SDK_REQUEST,
        _ => return None,
    })
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Appends lowercase hex of `bytes` (the `hex` crate's char iterator cost a fifth of a verify).
pub(crate) fn push_hex(bytes: &[u8], out: &mut String) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        for (i, &b) in chunk.iter().enumerate() {
            buf[2 * i] = HEX_LOWER[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX_LOWER[usize::from(b & 15)];
        }
        // Always ASCII.
        out.push_str(std::str::from_utf8(&buf[..2 * chunk.len()]).unwrap_or_default());
    }
}

/// Lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut s);
    s
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Lowercase hex SHA-256 written into `buf`, without allocating.
pub(crate) fn sha256_hex_in<'b>(data: &[u8], buf: &'b mut [u8; 64]) -> &'b str {
    for (i, &b) in Sha256::digest(data).iter().enumerate() {
        buf[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX_LOWER[usize::from(b & 15)];
    }
    // Always ASCII.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// The SigV4 string to sign for a canonical request.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    let mut s = String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    s.push_str(ALGORITHM);
    s.push('\n');
    s.push_str(amz_date);
    s.push('\n');
    s.push_str(scope);
    s.push('\n');
    push_hex(&Sha256::digest(canonical_request), &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str, mode: PathMode) -> String {
        let mut out = Vec::new();
        canonical_uri(path, mode, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn query(q: &str) -> String {
        let mut out = Vec::new();
        canonical_query(q, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_header_names_are_the_names_they_stand_for() {
        for name in [
            "host",
            "x-amz-date",
            "content-type",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "x-amz-target",
            "content-length",
            "content-md5",
            "range",
            "user-agent",
            "x-amz-user-agent",
            "amz-sdk-invocation-id",
            "amz-sdk-request",
        ] {
            assert_eq!(known_header(name).map(http::HeaderName::as_str), Some(name));
        }
        assert!(known_header("x-amz-meta-a").is_none());
        assert!(known_header("Host").is_none(), "signed names are lowercase");
    }

    #[test]
    fn find_byte_agrees_with_a_plain_scan() {
        let text: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        for len in 0..text.len() {
            for start in [0, 1, 3, 7] {
                let s = &text[start.min(len)..len];
                for b in [0u8, 1, 0x80, 0xff, b'=', b',', text[len.saturating_sub(1)]] {
                    assert_eq!(
                        find_byte(s, b),
                        s.iter().position(|&c| c == b),
                        "{len} {start} {b}"
                    );
                }
            }
        }
        // A match right above a byte that borrows (0x01 after the separator's zero).
        assert_eq!(find_byte(b"ab=\x01=cdefgh", b'='), Some(2));
        assert_eq!(find_byte(b"\x01\x01\x01\x01\x01\x01\x01=", b'='), Some(7));
    }

    #[test]
    fn non_s3_paths_are_normalized_and_double_encoded() {
        assert_eq!(uri("/a%20b", PathMode::Normalized), "/a%2520b");
        assert_eq!(uri("/a:b", PathMode::Normalized), "/a%3Ab");
        assert_eq!(uri("/a%3Ab", PathMode::Normalized), "/a%253Ab");
        assert_eq!(uri("/./a//b/../c/", PathMode::Normalized), "/a/c/");
        assert_eq!(uri("//", PathMode::Normalized), "/");
        assert_eq!(uri("/..", PathMode::Normalized), "/");
        assert_eq!(uri("", PathMode::Normalized), "/");
        assert_eq!(uri("/a/.", PathMode::Normalized), "/a");
    }

    #[test]
    fn normalization_fast_path_agrees() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b",
            "//",
            "/a//b",
            "/./",
            "/a/..",
            "/a/.",
            "a",
            "",
            "/.a/..b/c.",
            "/a/b/",
        ] {
            let fast = !needs_normalization(p.as_bytes());
            if fast {
                assert_eq!(normalize_path(p.as_bytes()), p.as_bytes(), "{p}");
            }
        }
        assert!(!needs_normalization(b"/a/b/"));
        assert!(needs_normalization(b"/a//b"));
    }

    #[test]
    fn s3_paths_are_encoded_once_and_not_normalized() {
        assert_eq!(uri("/b/a%20b", PathMode::S3), "/b/a%20b");
        assert_eq!(uri("/b/a+b", PathMode::S3), "/b/a%2Bb");
        assert_eq!(uri("/b/a%2fb", PathMode::S3), "/b/a%2Fb");
        assert_eq!(uri("/b//./x/../", PathMode::S3), "/b//./x/../");
        assert_eq!(uri("/b/%7E~", PathMode::S3), "/b/~~");
        assert_eq!(uri("/b/100%", PathMode::S3), "/b/100%25");
        assert_eq!(uri("/b/%zz", PathMode::S3), "/b/%25zz");
        assert_eq!(uri("/b/ሴ", PathMode::S3), "/b/%E1%88%B4");
        assert_eq!(uri("", PathMode::S3), "/");
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        assert_eq!(query("b=2&a=1"), "a=1&b=2");
        assert_eq!(query("uploads"), "uploads=");
        assert_eq!(query("a=2&a=1&a="), "a=&a=1&a=2");
        assert_eq!(
            query("k=a%2Fb&sp=a%20b&plus=a+b"),
            "k=a%2Fb&plus=a%20b&sp=a%20b"
        );
        assert_eq!(query("k=%2b"), "k=%2B");
        assert_eq!(query("x=%E1%88%B4&X-Amz-Signature=abc"), "x=%E1%88%B4");
        assert_eq!(query("&&a=1&"), "a=1");
        assert_eq!(query("a=b=c"), "a=b%3Dc");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let mut out = Vec::new();
        push_trimmed_value(b"  a   b \t c  \"x  y\" ", &mut out);
        assert_eq!(out, b"a b c \"x y\"");
    }

    #[test]
    fn ascii_splits_match_str_split() {
        for s in [
            "",
            "a",
            "/",
            "a/b",
            "//",
            "a//b/",
            "/a",
            "é/ü//ß",
            "20150830/us-east-1/iam/aws4_request",
        ] {
            let ours: Vec<&str> = split_ascii(s, b'/').collect();
            let std: Vec<&str> = s.split('/').collect();
            assert_eq!(ours, std, "{s:?}");
            assert_eq!(split_once_ascii(s, b'/'), s.split_once('/'), "{s:?}");
        }
    }

    #[test]
    fn sha256_hex_in_matches_sha256_hex() {
        let mut buf = [0; 64];
        assert_eq!(sha256_hex_in(b"", &mut buf), EMPTY_SHA256);
        assert_eq!(sha256_hex_in(b"abc", &mut buf), sha256_hex(b"abc"));
    }

    #[test]
    fn decode_handles_truncated_escapes() {
        assert_eq!(percent_decode(b"%", false), b"%");
        assert_eq!(percent_decode(b"%4", false), b"%4");
        assert_eq!(percent_decode(b"%41", false), b"A");
        assert_eq!(percent_decode(b"a%4g", false), b"a%4g");
        assert_eq!(percent_decode(b"+", true), b" ");
        assert_eq!(percent_decode(b"+", false), b"+");
    }
}
