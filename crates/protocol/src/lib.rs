//! keyward-protocol
#![forbid(unsafe_code)]
