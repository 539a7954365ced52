//! The AWS wire protocols keyward speaks, with no I/O:
//!
//! - [`query`]: the form-encoded parameters of the AWS query protocol (IAM, STS), with list members;
//! - [`xml`]: a small XML writer for response envelopes;
//! - [`validate`]: input checks driven by the constraints of the service models, worded as AWS words them;
//! - [`error`]: API errors and their rendering in each dialect (query XML, S3 XML, JSON);
//! - [`time`]: the timestamp formats of responses.
#![forbid(unsafe_code)]

pub mod error;
pub mod query;
pub mod time;
pub mod validate;
pub mod xml;

pub use error::{ApiError, Dialect};
pub use query::Params;

/// The XML namespace of IAM responses.
pub const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// The XML namespace of STS responses.
pub const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The XML namespace of S3 responses.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// A new request id in AWS's form (a random UUID, version 4; unique, not secret).
pub fn new_request_id() -> String {
    let b = keyward_ids::unique_bytes();
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        let byte = match i {
            6 => (byte & 0x0f) | 0x40,
            8 => (byte & 0x3f) | 0x80,
            _ => *byte,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[(byte >> 4) as usize]));
        s.push(char::from(HEX[(byte & 15) as usize]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        let id = super::new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, super::new_request_id());
    }
}
