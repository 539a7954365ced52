//! The records the store keeps, as the server sees them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

/// An account: the unit that owns users, keys and an alias (an AWS account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The 12-digit account id.
    pub id: String,
    /// A unique human name for the account (keyward's own, not an AWS field).
    pub name: String,
    /// Creation time (millisecond precision).
    pub created: SystemTime,
}

/// An IAM user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The owning account's id.
    pub account_id: String,
    /// The name as it was given (names are unique per account ignoring ASCII case).
    pub name: String,
    /// The stable unique id, `AIDA` + 17 characters; unchanged by renames.
    pub user_id: String,
    /// The IAM path, `/` or `/a/b/`.
    pub path: String,
    /// `arn:aws:iam::ACCOUNT:user{path}{name}`.
    pub arn: String,
    /// Creation time (millisecond precision).
    pub created: SystemTime,
    /// The user's tags, sorted by key.
    pub tags: Vec<Tag>,
}

/// A tag on a user. Keys are unique per user ignoring ASCII case, as in IAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Tag key, 1 to 128 characters.
    pub key: String,
    /// Tag value, 0 to 256 characters.
    pub value: String,
}

impl Tag {
    /// A tag from a key and a value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Tag {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Whether an access key may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// The key authenticates requests.
    Active,
    /// The key is kept but refused.
    Inactive,
}

impl KeyStatus {
    /// `"Active"` or `"Inactive"`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }

    /// Parses the wire form (exact case), `None` otherwise.
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "Active" => Some(KeyStatus::Active),
            "Inactive" => Some(KeyStatus::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata of a long-term access key (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKey {
    /// The access key id, `AKIA...`.
    pub key_id: String,
    /// The owning account's id.
    pub account_id: String,
    /// The owning user's current name, `None` for the account's root.
    pub user_name: Option<String>,
    /// Active or inactive.
    pub status: KeyStatus,
    /// Creation time (millisecond precision).
    pub created: SystemTime,
}

/// When and where an access key was last used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastUsed {
    /// Time of the latest use (millisecond precision once stored).
    pub when: SystemTime,
    /// The service of that request's credential scope (`iam`, `sts`, `s3`...).
    pub service: String,
    /// The region of that request's credential scope.
    pub region: String,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// An opaque marker for the next page, `None` on the last page (`IsTruncated` false).
    pub next_marker: Option<String>,
}

/// A secret access key in clear, as needed to verify a signature.
///
/// The memory is zeroed on drop; `Debug` prints no secret, and there is no `Display`: read it
/// deliberately with [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: String) -> Secret {
        Secret(Zeroizing::new(secret))
    }

    /// The secret in clear.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The ARN of a user.
pub(crate) fn user_arn(account_id: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account_id}:user{path}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip() {
        for ms in [0i64, 1, 1_700_000_000_123, -5] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
        assert!(!format!("{s:?}").contains("wJal"));
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    }
}
