//! Property tests over the query-protocol form parser and the XML writer: arbitrary input never panics,
//! and what a client encodes is what the parser decodes; escaped text unescapes to itself.

use keyward_protocol::query::{decode_component, FormError, MAX_LIST_INDEX};
use keyward_protocol::xml::{escape, XmlWriter};
use keyward_protocol::{ApiError, Dialect, Params};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Form-encodes `s` the way botocore does (unreserved characters kept, space as `%20` or `+`).
fn encode(s: &str, plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if plus => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Reverses [`escape`]: the five entities and numeric character references.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find(';').expect("entity ends") + i;
        let ent = &rest[i + 1..j];
        match ent {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            n => out.push(
                char::from_u32(n.trim_start_matches('#').parse().expect("number")).expect("char"),
            ),
        }
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_or_fail_cleanly(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut p = Params::default();
        if p.extend_from_form(&data).is_ok() {
            // Whatever parsed can be listed and asked about without panicking.
            for name in ["Tags", "TagKeys", "A", ""] {
                let _ = p.list_entries(name);
                let _ = p.has_list(name);
            }
            let _ = p.get("Action");
        }
    }

    #[test]
    fn form_like_bytes_never_panic(
        parts in prop::collection::vec("[A-Za-z0-9.%+=&-]{0,16}", 0..40)
    ) {
        let form = parts.join("&");
        if let Ok(p) = Params::parse(form.as_bytes()) {
            let _ = p.list_entries("Tags");
            let _ = p.list_entries("Tags.member.1");
        }
    }

    #[test]
    fn encode_then_parse_round_trips(
        pairs in prop::collection::btree_map("[A-Za-z][A-Za-z0-9.]{0,12}", any::<String>(), 0..20),
        plus in any::<bool>(),
    ) {
        let form = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k, plus), encode(v, plus)))
            .collect::<Vec<_>>()
            .join("&");
        let p = Params::parse(form.as_bytes()).unwrap();
        let got: Vec<(String, String)> = p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let want: Vec<(String, String)> = pairs.into_iter().collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn decode_component_agrees_with_encoding(s in any::<String>(), plus in any::<bool>()) {
        prop_assert_eq!(decode_component(encode(&s, plus).as_bytes()), Ok(s));
    }

    #[test]
    fn duplicates_are_refused(k in "[A-Za-z]{1,8}", a in "[a-z]{0,4}", b in "[a-z]{0,4}") {
        let form = format!("{k}={a}&{k}={b}");
        prop_assert_eq!(Params::parse(form.as_bytes()), Err(FormError::Duplicate(k)));
    }

    #[test]
    fn list_entries_accept_exactly_the_valid_indices(idx in "-?[0-9]{1,25}", field in "(\\.[A-Za-z]{1,5})?") {
        let form = format!("Tags.member.{idx}{field}=v");
        let p = Params::parse(form.as_bytes()).unwrap();
        let valid = !idx.starts_with('0')
            && idx.parse::<usize>().is_ok_and(|n| (1..=MAX_LIST_INDEX).contains(&n));
        match p.list_entries("Tags") {
            Ok(e) => {
                prop_assert!(valid);
                prop_assert_eq!(e.len(), 1);
                prop_assert_eq!(e[0].0, idx.parse::<usize>().unwrap());
                prop_assert_eq!(e[0].1, field.trim_start_matches('.'));
            }
            Err(name) => {
                prop_assert!(!valid);
                prop_assert_eq!(name, format!("Tags.member.{idx}{field}"));
            }
        }
    }

    #[test]
    fn xml_escape_round_trips(s in any::<String>()) {
        let e = escape(&s);
        prop_assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''));
        prop_assert!(!e.chars().any(|c| (c as u32) < 0x20 && c != '\n' && c != '\t'));
        prop_assert_eq!(unescape(&e), s);
    }

    #[test]
    fn xml_writer_elements_carry_their_text(tag in "[A-Za-z]{1,10}", text in any::<String>()) {
        let mut w = XmlWriter::new();
        w.open("R").elem(&tag, &text).close("R");
        let out = w.finish();
        let inner = out
            .strip_prefix(&format!("<R><{tag}>"))
            .and_then(|r| r.strip_suffix(&format!("</{tag}></R>")))
            .expect("shape");
        prop_assert_eq!(unescape(inner), text);
    }

    #[test]
    fn errors_render_in_every_dialect(code in "[A-Za-z]{1,20}", message in any::<String>(), status in 400u16..600) {
        let e = ApiError::new(status, code.clone(), message.clone());
        for d in [Dialect::Iam, Dialect::Sts, Dialect::S3, Dialect::Json] {
            let r = e.render(d, "rid");
            prop_assert_eq!(r.status, status);
            prop_assert!(r.body.contains(&code));
            if d != Dialect::Json {
                let m = r.body.split("<Message>").nth(1).and_then(|m| m.split("</Message>").next()).unwrap();
                prop_assert_eq!(unescape(m), message.clone());
            }
        }
    }
}
