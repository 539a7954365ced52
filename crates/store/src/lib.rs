//! keyward-store
#![forbid(unsafe_code)]
