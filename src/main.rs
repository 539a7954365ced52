//! The one `keyward` binary.
#![forbid(unsafe_code)]

fn main() {}
