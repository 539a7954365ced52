//! CloudTrail's `responseElements` from keyward's own XML answer: the `<...Result>` element as JSON
//! (camelCase names, repeated `member` elements as arrays), with every secret removed.

use serde_json::{Map, Value};

/// Elements never copied into the trail.
const SECRET_ELEMENTS: &[&str] = &["SecretAccessKey", "SessionToken", "Password"];

enum Node {
    Text(String),
    Element(String, Vec<Node>),
}

/// Parses the XML keyward writes (no comments, CDATA or DTD); `None` for anything else.
fn parse(xml: &str) -> Option<Vec<Node>> {
    let mut stack: Vec<(String, Vec<Node>)> = vec![(String::new(), Vec::new())];
    let mut rest = xml;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>')?;
            let tag = &after[..end];
            rest = &after[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let (open, children) = stack.pop()?;
                if open != name.trim() {
                    return None;
                }
                stack.last_mut()?.1.push(Node::Element(open, children));
            } else if let Some(t) = tag.strip_suffix('/') {
                let name = t.split_whitespace().next()?.to_owned();
                stack.last_mut()?.1.push(Node::Element(name, Vec::new()));
            } else {
                let name = tag.split_whitespace().next()?.to_owned();
                stack.push((name, Vec::new()));
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = unescape(&rest[..end])?;
            if !text.trim().is_empty() {
                stack.last_mut()?.1.push(Node::Text(text));
            }
            rest = &rest[end..];
        }
    }
    if stack.len() != 1 {
        return None;
    }
    stack.pop().map(|(_, n)| n)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let semi = after.find(';')?;
        let ent = &after[..semi];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    ent.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `AccessKeyId` -> `accessKeyId`.
pub(crate) fn camel(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Elements that hold a time, which CloudTrail writes in its own words.
const TIME_ELEMENTS: &[&str] = &[
    "CreateDate",
    "Expiration",
    "LastUsedDate",
    "PasswordLastUsed",
];

/// `2026-11-27T03:08:44Z` as CloudTrail writes times inside `responseElements` and
/// `requestParameters`: `Nov 27, 2026, 3:08:44 AM` (real 2025 records; older ones lack the comma
/// after the year). Anything else is kept as it is.
pub(crate) fn cloudtrail_time(iso: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = iso.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = iso.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let name = MONTHS.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if hour > 23 || minute > 59 || second > 60 || day == 0 || day > 31 {
        return None;
    }
    let (h12, half) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    Some(format!(
        "{name} {day}, {year}, {h12}:{minute:02}:{second:02} {half}"
    ))
}

fn to_value(children: &[Node]) -> Value {
    to_value_of("", children)
}

fn to_value_of(name: &str, children: &[Node]) -> Value {
    if let [Node::Text(t)] = children {
        if TIME_ELEMENTS.contains(&name) {
            if let Some(t) = cloudtrail_time(t) {
                return Value::String(t);
            }
        }
        return Value::String(t.clone());
    }
    let elements: Vec<(&str, &[Node])> = children
        .iter()
        .filter_map(|n| match n {
            Node::Element(name, kids) if !SECRET_ELEMENTS.contains(&name.as_str()) => {
                Some((name.as_str(), kids.as_slice()))
            }
            _ => None,
        })
        .collect();
    if !elements.is_empty() && elements.iter().all(|(n, _)| *n == "member") {
        return Value::Array(elements.iter().map(|(_, k)| to_value(k)).collect());
    }
    let mut map = Map::new();
    for (name, kids) in elements {
        map.insert(camel(name), to_value_of(name, kids));
    }
    Value::Object(map)
}

/// The `responseElements` of a successful answer: the content of its `<...Result>` element, or
/// `None` when it has none (e.g. `DeleteUser`) or is not XML keyward wrote.
pub(crate) fn response_elements(xml: &str) -> Option<Value> {
    let nodes = parse(xml)?;
    let Some(Node::Element(_, top)) = nodes.into_iter().next() else {
        return None;
    };
    top.iter().find_map(|n| match n {
        Node::Element(name, kids) if name.ends_with("Result") && !kids.is_empty() => {
            Some(to_value(kids))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_access_key_loses_its_secret() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateAccessKeyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><CreateAccessKeyResult><AccessKey><UserName>bob</UserName><AccessKeyId>AKIAEXAMPLE</AccessKeyId><Status>Active</Status><SecretAccessKey>wJalrXUtnFEMI/K7MDENG</SecretAccessKey><CreateDate>2026-01-01T00:00:00Z</CreateDate></AccessKey></CreateAccessKeyResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></CreateAccessKeyResponse>"#;
        let v = response_elements(xml).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"accessKey": {"userName": "bob", "accessKeyId": "AKIAEXAMPLE",
                "status": "Active", "createDate": "Jan 1, 2026, 12:00:00 AM"}})
        );
        assert!(!v.to_string().contains("wJalr"));
    }

    #[test]
    fn session_credentials_lose_secret_and_token_and_lists_become_arrays() {
        let xml = "<GetSessionTokenResponse><GetSessionTokenResult><Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s3cr3t</SecretAccessKey><SessionToken>tok&amp;en</SessionToken><Expiration>2026</Expiration></Credentials></GetSessionTokenResult></GetSessionTokenResponse>";
        let v = response_elements(xml).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"credentials": {"accessKeyId": "ASIAX", "expiration": "2026"}})
        );
        let xml = "<R><XResult><Tags><member><Key>a&lt;b</Key></member><member><Key>c</Key></member></Tags></XResult></R>";
        assert_eq!(
            response_elements(xml).unwrap(),
            serde_json::json!({"tags": [{"key": "a<b"}, {"key": "c"}]})
        );
    }

    #[test]
    fn times_are_written_as_cloudtrail_writes_them() {
        for (iso, ct) in [
            ("2014-03-24T21:11:59Z", "Mar 24, 2014, 9:11:59 PM"),
            ("2025-10-26T23:50:52Z", "Oct 26, 2025, 11:50:52 PM"),
            ("2026-11-27T00:05:09Z", "Nov 27, 2026, 12:05:09 AM"),
            ("2026-12-01T12:00:00Z", "Dec 1, 2026, 12:00:00 PM"),
        ] {
            assert_eq!(cloudtrail_time(iso).as_deref(), Some(ct));
        }
        for bad in [
            "2026",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01 00:00:00Z",
        ] {
            assert_eq!(cloudtrail_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn empty_or_foreign_answers_have_no_elements() {
        assert_eq!(
            response_elements(
                "<DeleteUserResponse><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DeleteUserResponse>"
            ),
            None
        );
        assert_eq!(response_elements("<a><b></a>"), None);
        assert_eq!(response_elements("not xml <"), None);
    }
}
