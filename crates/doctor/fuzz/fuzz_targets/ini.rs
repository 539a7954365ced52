//! The doctor's botocore-compatible config parser on arbitrary bytes: parse, then walk every section,
//! option and nested value. Must never panic (problems are recorded, not raised).
#![no_main]
use keyward_doctor::ini;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let f = ini::parse(std::path::Path::new("config"), data);
    let _ = f.botocore_fails();
    for s in &f.sections {
        let _ = f.section(&s.name);
        for e in f.options(s) {
            let _ = f.lookup(s, &e.key);
            let _ = (e.is_nested(), e.nested(), ini::escape(&e.value));
        }
    }
    for p in &f.problems {
        let _ = ini::escape(&p.line_text);
    }
});
