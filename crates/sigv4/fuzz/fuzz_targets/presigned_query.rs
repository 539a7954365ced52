#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_sigv4::fuzzing::presigned_query(data));
