//! The S3 dialect: `ListBuckets` answers an empty list owned by the caller, so `aws s3 ls` is a true
//! credential check; every other operation is `NotImplemented` once authentication succeeded.

use crate::caller::Caller;
use keyward_protocol::xml::XmlWriter;
use keyward_protocol::{ApiError, S3_NS};
use sha2::{Digest, Sha256};

/// The S3 answer for an authenticated request: `Ok(body)` or an error.
pub(crate) fn handle(
    caller: &Caller,
    method: &str,
    path: &str,
    query: &str,
) -> Result<String, ApiError> {
    let list_buckets = (method == "GET" || method == "HEAD")
        && path == "/"
        && query.split('&').all(|kv| {
            kv.is_empty()
                || kv.starts_with("X-Amz-")
                || is_v2_auth_param(kv)
                || kv.starts_with("x-id=ListBuckets")
                || kv.starts_with("max-buckets=")
                || kv.starts_with("prefix=")
                || kv.starts_with("continuation-token=")
                || kv.starts_with("bucket-region=")
        });
    if !list_buckets {
        return Err(ApiError::new(
            501,
            "NotImplemented",
            "A header you provided implies functionality that is not implemented",
        ));
    }
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| keyward_protocol::query::decode_component(v.as_bytes()))
        })
    };
    if let Some(max) = param("max-buckets") {
        let max = max.unwrap_or_default();
        if !max.parse::<u32>().is_ok_and(|n| (1..=10_000).contains(&n)) {
            return Err(ApiError::new(
                400,
                "InvalidArgument",
                "Provided max-buckets not an integer or within integer range",
            )
            .with("ArgumentName", "max-buckets")
            .with("ArgumentValue", max));
        }
    }
    let prefix = match param("prefix") {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            return Err(ApiError::new(
                400,
                "InvalidArgument",
                "Invalid Argument: prefix is not valid URL-encoded text",
            ))
        }
        None => None,
    };
    // The owner is the account; S3 no longer returns DisplayName (since November 2025, per the
    // S3 API reference's Owner page).
    let mut w = XmlWriter::with_declaration();
    w.open_ns("ListAllMyBucketsResult", S3_NS)
        .open("Owner")
        .elem("ID", &canonical_user_id(caller.account_id()))
        .close("Owner")
        .open("Buckets")
        .close("Buckets");
    // "If Prefix was sent with the request, it is included in the response."
    w.opt_elem("Prefix", prefix.as_deref());
    w.close("ListAllMyBucketsResult");
    Ok(w.finish())
}

fn is_v2_auth_param(kv: &str) -> bool {
    [
        "AWSAccessKeyId=",
        "Signature=",
        "Expires=",
        "x-amz-security-token=",
    ]
    .iter()
    .any(|p| kv.starts_with(p))
}

/// A stable 64-hex-digit canonical user id for the account, as S3 shows owners.
fn canonical_user_id(account_id: &str) -> String {
    let d = Sha256::digest(format!("keyward canonical user {account_id}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}
