//! keyward-server
#![forbid(unsafe_code)]
