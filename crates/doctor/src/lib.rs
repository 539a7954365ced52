//! keyward-doctor
#![forbid(unsafe_code)]
