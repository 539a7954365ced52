//! Property tests over the doctor's config-file parser: any bytes parse without panicking (problems are
//! recorded, never raised), and a file written from sections and options reads back the same.

use keyward_doctor::ini;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_without_panicking(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let f = ini::parse(Path::new("config"), &data);
        let _ = f.botocore_fails();
        for s in &f.sections {
            for e in f.options(s) {
                let _ = (e.is_nested(), e.nested(), ini::escape(&e.value));
            }
        }
    }

    #[test]
    fn ini_like_text_parses_without_panicking(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[[ -~]{0,12}\\]?",
                "[ \t]{0,3}[a-z_ ]{0,8}[ \t]?[=:]?[ -~]{0,16}",
                "[#;][ -~]{0,10}",
                "[ \t]{1,4}[a-z_]{1,6} = [ -~]{0,8}",
                Just(String::new()),
            ],
            0..30,
        ),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let f = ini::parse(Path::new("credentials"), text.as_bytes());
        let _ = f.botocore_fails();
        for s in &f.sections {
            for e in f.options(s) {
                let _ = e.nested();
            }
        }
    }

    #[test]
    fn written_files_read_back(
        sections in prop::collection::btree_map(
            "[a-z][a-z0-9_-]{0,10}",
            prop::collection::btree_map("[a-z][a-z0-9_]{0,10}", "[A-Za-z0-9/+=._-]{0,30}", 0..6),
            0..6,
        ),
        colon in any::<bool>(),
    ) {
        let delim = if colon { ":" } else { "=" };
        let mut text = String::new();
        for (name, opts) in &sections {
            text.push_str(&format!("[{name}]\n"));
            for (k, v) in opts {
                text.push_str(&format!("{k} {delim} {v}\n"));
            }
            text.push('\n');
        }
        let f = ini::parse(Path::new("config"), text.as_bytes());
        prop_assert!(!f.botocore_fails(), "{:?}", f.problems);
        let got: BTreeMap<String, BTreeMap<String, String>> = f
            .sections
            .iter()
            .map(|s| (s.name.clone(), s.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()))
            .collect();
        prop_assert_eq!(got, sections);
    }
}
