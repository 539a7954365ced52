//! API errors and how each AWS dialect renders them.
//!
//! One [`ApiError`] value says what went wrong (status, code, message and any extra elements S3 adds);
//! [`ApiError::render`] is the one place that turns it into bytes for a dialect, so the wire forms can be
//! reviewed side by side.

use crate::xml::XmlWriter;
use std::borrow::Cow;

/// The error dialect of the service a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// IAM's query protocol (namespace `https://iam.amazonaws.com/doc/2010-05-08/`).
    Iam,
    /// STS's query protocol (namespace `https://sts.amazonaws.com/doc/2011-06-15/`).
    Sts,
    /// S3's REST XML: a bare `<Error>` with `RequestId` and `HostId`.
    S3,
    /// The JSON protocol of `X-Amz-Target` services.
    Json,
}

/// An error answer, independent of dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// AWS error code, e.g. `InvalidClientTokenId`.
    pub code: Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// Extra elements S3 adds after `Message` (e.g. `AWSAccessKeyId`), in order. Ignored by other dialects.
    pub extra: Vec<(&'static str, String)>,
}

/// A rendered error: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(
        status: u16,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            extra: Vec::new(),
        }
    }

    /// Adds an S3 extra element.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// `Sender` for 4xx, `Receiver` for 5xx, as the query protocol's `<Type>` says.
    pub fn fault_type(&self) -> &'static str {
        if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        }
    }

    /// Renders the error in `dialect`.
    pub fn render(&self, dialect: Dialect, request_id: &str) -> Rendered {
        match dialect {
            Dialect::Iam | Dialect::Sts => {
                let ns = if dialect == Dialect::Iam {
                    crate::IAM_NS
                } else {
                    crate::STS_NS
                };
                let mut w = XmlWriter::new();
                w.open_ns("ErrorResponse", ns)
                    .open("Error")
                    .elem("Type", self.fault_type())
                    .elem("Code", &self.code)
                    .elem("Message", &self.message)
                    .close("Error")
                    .elem("RequestId", request_id)
                    .close("ErrorResponse");
                Rendered {
                    status: self.status,
                    content_type: "text/xml",
                    body: w.finish(),
                }
            }
            Dialect::S3 => {
                let mut w = XmlWriter::with_declaration();
                w.open("Error")
                    .elem("Code", &self.code)
                    .elem("Message", &self.message);
                for (name, value) in &self.extra {
                    w.elem(name, value);
                }
                w.elem("RequestId", request_id)
                    .elem("HostId", &host_id(request_id))
                    .close("Error");
                Rendered {
                    status: self.status,
                    content_type: "application/xml",
                    body: w.finish(),
                }
            }
            Dialect::Json => {
                let mut body = String::from("{\"__type\":\"com.amazon.coral.service#");
                json_escape_into(&mut body, &self.code);
                body.push_str("\",\"message\":\"");
                json_escape_into(&mut body, &self.message);
                body.push_str("\"}");
                Rendered {
                    status: self.status,
                    content_type: "application/x-amz-json-1.1",
                    body,
                }
            }
        }
    }

    // ---- The authentication errors, worded as AWS words them. ----

    /// Unknown, deleted or inactive key, or a bad session token (query dialect).
    pub fn invalid_client_token_id() -> Self {
        Self::new(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    /// Unknown, deleted or inactive key (S3 dialect).
    pub fn invalid_access_key_id(key_id: &str) -> Self {
        Self::new(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
        .with("AWSAccessKeyId", key_id)
    }

    /// Wrong secret (query dialect).
    pub fn signature_does_not_match() -> Self {
        Self::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    }

    /// Wrong secret (S3 dialect), with what S3 shows for debugging.
    pub fn s3_signature_does_not_match(
        key_id: &str,
        string_to_sign: &str,
        signature_provided: &str,
        canonical_request: &str,
    ) -> Self {
        Self::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", key_id)
        .with("StringToSign", string_to_sign)
        .with("SignatureProvided", signature_provided)
        .with("StringToSignBytes", hex_bytes(string_to_sign))
        .with("CanonicalRequest", canonical_request)
        .with("CanonicalRequestBytes", hex_bytes(canonical_request))
    }

    /// No authentication at all (query dialect).
    pub fn missing_authentication_token() -> Self {
        Self::new(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )
    }

    /// Expired session credentials (query dialect).
    pub fn expired_token() -> Self {
        Self::new(
            403,
            "ExpiredToken",
            "The security token included in the request is expired",
        )
    }

    /// S3's `AccessDenied` for a request without authentication.
    pub fn s3_access_denied() -> Self {
        Self::new(403, "AccessDenied", "Access Denied")
    }

    /// A required parameter is missing (query dialect).
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    /// An internal failure; the details go to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    /// The store is out of reach; AWS SDKs retry this.
    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "Service is unable to handle request.",
        )
    }
}

/// The lowercase hex of each byte, space-separated, as S3's `StringToSignBytes` shows it.
pub fn hex_bytes(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() * 3);
    for (i, b) in s.bytes().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(char::from(HEX[(b >> 4) as usize]));
        out.push(char::from(HEX[(b & 15) as usize]));
    }
    out
}

/// S3's `HostId`: an opaque value tied to the request.
fn host_id(request_id: &str) -> String {
    let mut s = String::with_capacity(request_id.len() * 2);
    for b in request_id.bytes().rev() {
        s.push(char::from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(b % 64) as usize],
        ));
    }
    s
}

/// Appends `s` to `out` as the inside of a JSON string.
pub fn json_escape_into(out: &mut String, s: &str) {
    use std::fmt::Write;
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_dialect_matches_aws() {
        let r = ApiError::invalid_client_token_id().render(Dialect::Sts, "rid");
        assert_eq!(r.status, 403);
        assert_eq!(r.content_type, "text/xml");
        assert_eq!(
            r.body,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>rid</RequestId></ErrorResponse>"
        );
        let r = ApiError::internal().render(Dialect::Iam, "r");
        assert!(r.body.contains("<Type>Receiver</Type>") && r.body.contains(crate::IAM_NS));
    }

    #[test]
    fn s3_dialect_has_extras_in_order() {
        let r = ApiError::s3_signature_does_not_match("AKIA", "a\nb", "sig", "GET")
            .render(Dialect::S3, "rid");
        assert!(r.body.starts_with("<?xml"));
        let order = [
            "<Code>",
            "<Message>",
            "<AWSAccessKeyId>",
            "<StringToSign>",
            "<SignatureProvided>",
            "<StringToSignBytes>61 0a 62<",
            "<CanonicalRequest>",
            "<CanonicalRequestBytes>",
            "<RequestId>",
            "<HostId>",
        ];
        let mut at = 0;
        for o in order {
            let i = r.body[at..]
                .find(o)
                .unwrap_or_else(|| panic!("{o} after {at} in {}", r.body));
            at += i;
        }
    }

    #[test]
    fn json_dialect_escapes() {
        let r = ApiError::new(400, "X", "a \"b\"\n").render(Dialect::Json, "r");
        assert_eq!(
            r.body,
            "{\"__type\":\"com.amazon.coral.service#X\",\"message\":\"a \\\"b\\\"\\n\"}"
        );
    }
}
