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

/// A request id: a random UUID (version 4; unique, not secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// The UUID's 16 bytes (what the audit trail stores).
    pub bytes: [u8; 16],
    /// Its text in AWS's form, lowercase hyphenated (what the response carries).
    pub text: String,
}

/// A new request id in AWS's form.
pub fn new_request_id() -> RequestId {
    let mut bytes = keyward_ids::unique_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from(HEX[(byte >> 4) as usize]));
        text.push(char::from(HEX[(byte & 15) as usize]));
    }
    RequestId { bytes, text }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        let id = super::new_request_id();
        let text = &id.text;
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        // The text is the bytes, hyphenated.
        let hex: String = text.chars().filter(|&c| c != '-').collect();
        let bytes: String = id.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, bytes);
        assert_eq!(
            [8, 13, 18, 23].map(|i| text.as_bytes()[i]),
            [b'-'; 4],
            "{text}"
        );
        assert_ne!(id, super::new_request_id());
    }
}
