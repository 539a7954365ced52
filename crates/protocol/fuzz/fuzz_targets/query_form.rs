//! The query-protocol form parser on arbitrary bytes: parse, list every list-shaped parameter, and
//! render what was parsed as XML and as an error in every dialect. Must never panic; values that
//! parsed must come back from `get`.
#![no_main]
use keyward_protocol::{ApiError, Dialect, Params};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(p) = Params::parse(data) else {
        return;
    };
    for (k, v) in p.iter() {
        assert_eq!(p.get(k), Some(v));
        if let Some(i) = k.find(".member.") {
            let _ = p.list_entries(&k[..i]);
            let _ = p.has_list(&k[..i]);
        }
        let mut w = keyward_protocol::xml::XmlWriter::new();
        w.open("R").elem("V", v).close("R");
        let _ = w.finish();
        let e = ApiError::new(400, "ValidationError", v);
        for d in [Dialect::Iam, Dialect::Sts, Dialect::S3, Dialect::Json] {
            let _ = e.render(d, k);
        }
    }
});
