//! Who made an authenticated request.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use crate::keycache::CachedKey;

/// The principal behind an access key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The account's root user.
    Root,
    /// An IAM user.
    User {
        /// User name.
        name: String,
        /// Unique id (`AIDA...`).
        user_id: String,
        /// ARN `arn:aws:iam::ACCOUNT:user{path}{name}`.
        arn: String,
    },
}

/// An IAM user caller's names, borrowed from its [`Caller`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRef<'a> {
    /// User name.
    pub name: &'a str,
    /// Unique id (`AIDA...`).
    pub user_id: &'a str,
    /// ARN `arn:aws:iam::ACCOUNT:user{path}{name}`.
    pub arn: &'a str,
}

/// An authenticated caller.
///
/// Its strings (account, key id, and the user's name, id and ARN, or root's ARN) are held one after
/// the other in a single allocation: every request reads most of them (the answer, the audit
/// event), and with many keys in use each caller is cold memory, where each separate string would
/// be one more cache miss.
#[derive(Clone)]
pub struct Caller {
    /// `account_id`, `access_key_id`, then for a user `name`, `user_id`, `arn`; for root its ARN.
    text: Box<str>,
    /// Where the account id, the key id, the user name and the user id end in `text` (the last two
    /// equal the key id's end for root).
    ends: [u32; 4],
    /// The account's root user (not an IAM user).
    root: bool,
    /// For temporary (session) credentials, when they expire.
    session_expires: Option<SystemTime>,
}

impl Caller {
    /// A caller of `account_id` acting as `identity` with `access_key_id`; `session_expires` for
    /// temporary credentials.
    pub fn new(
        account_id: &str,
        identity: &Identity,
        access_key_id: &str,
        session_expires: Option<SystemTime>,
    ) -> Caller {
        let mut text = String::with_capacity(
            account_id.len()
                + access_key_id.len()
                + match identity {
                    Identity::Root => "arn:aws:iam:::root".len() + account_id.len(),
                    Identity::User { name, user_id, arn } => name.len() + user_id.len() + arn.len(),
                },
        );
        let mut ends = [0u32; 4];
        let end = |t: &String| u32::try_from(t.len()).unwrap_or(u32::MAX);
        text.push_str(account_id);
        ends[0] = end(&text);
        text.push_str(access_key_id);
        ends[1] = end(&text);
        match identity {
            Identity::Root => {
                ends[2] = ends[1];
                ends[3] = ends[1];
                text.push_str("arn:aws:iam::");
                text.push_str(account_id);
                text.push_str(":root");
            }
            Identity::User { name, user_id, arn } => {
                text.push_str(name);
                ends[2] = end(&text);
                text.push_str(user_id);
                ends[3] = end(&text);
                text.push_str(arn);
            }
        }
        Caller {
            text: text.into_boxed_str(),
            ends,
            root: matches!(identity, Identity::Root),
            session_expires,
        }
    }

    fn part(&self, from: u32, to: u32) -> &str {
        self.text.get(from as usize..to as usize).unwrap_or("")
    }

    /// The 12-digit account the caller belongs to.
    pub fn account_id(&self) -> &str {
        self.part(0, self.ends[0])
    }

    /// The access key id the request was signed with.
    pub fn access_key_id(&self) -> &str {
        self.part(self.ends[0], self.ends[1])
    }

    /// True for the account's root user.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The IAM user's name, id and ARN; `None` for root.
    pub fn user(&self) -> Option<UserRef<'_>> {
        (!self.is_root()).then(|| UserRef {
            name: self.part(self.ends[1], self.ends[2]),
            user_id: self.part(self.ends[2], self.ends[3]),
            arn: self.part(self.ends[3], self.text.len() as u32),
        })
    }

    /// The caller's ARN as GetCallerIdentity and AccessDenied messages show it.
    pub fn arn(&self) -> &str {
        self.part(self.ends[3], self.text.len() as u32)
    }

    /// The caller's UserId as GetCallerIdentity shows it (the account id for root).
    pub fn user_id(&self) -> &str {
        match self.user() {
            None => self.account_id(),
            Some(u) => u.user_id,
        }
    }

    /// The IAM user name, or `None` for root.
    pub fn user_name(&self) -> Option<&str> {
        self.user().map(|u| u.name)
    }

    /// For temporary (session) credentials, when they expire.
    pub fn session_expires(&self) -> Option<SystemTime> {
        self.session_expires
    }

    /// True for temporary (session) credentials.
    pub fn is_session(&self) -> bool {
        self.session_expires.is_some()
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("account_id", &self.account_id())
            .field("access_key_id", &self.access_key_id())
            .field("user", &self.user())
            .field("session_expires", &self.session_expires)
            .finish()
    }
}

/// A caller as a request holds it: the cache entry of the long-term key it signed with (whose
/// [`CachedKey::owner`] it is), or a caller of its own (session credentials).
#[derive(Clone)]
pub enum CallerRef {
    /// A long-term key's cache entry.
    Key(Arc<CachedKey>),
    /// A caller made for this request.
    Own(Arc<Caller>),
}

impl Deref for CallerRef {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        match self {
            CallerRef::Key(entry) => &entry.owner,
            CallerRef::Own(caller) => caller,
        }
    }
}

impl fmt::Debug for CallerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The caller only: the entry also holds the key's secret.
        fmt::Debug::fmt(&**self, f)
    }
}

/// The ARN of user `name` with `path` in `account_id`.
pub fn user_arn(account_id: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account_id}:user{path}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_callers_parts_are_found_again() {
        let identity = Identity::User {
            name: "alice".into(),
            user_id: "AIDAEXAMPLEEXAMPLE01".into(),
            arn: "arn:aws:iam::123456789012:user/team/alice".into(),
        };
        let c = Caller::new("123456789012", &identity, "AKIAEXAMPLEEXAMPLE01", None);
        assert_eq!(c.account_id(), "123456789012");
        assert_eq!(c.access_key_id(), "AKIAEXAMPLEEXAMPLE01");
        assert!(!c.is_root());
        assert_eq!(
            c.user(),
            Some(UserRef {
                name: "alice",
                user_id: "AIDAEXAMPLEEXAMPLE01",
                arn: "arn:aws:iam::123456789012:user/team/alice",
            })
        );
        assert_eq!(c.arn(), "arn:aws:iam::123456789012:user/team/alice");
        assert_eq!(c.user_id(), "AIDAEXAMPLEEXAMPLE01");
        assert_eq!(c.user_name(), Some("alice"));
        assert!(!c.is_session());
    }

    #[test]
    fn root_and_session_callers() {
        let until = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let c = Caller::new(
            "123456789012",
            &Identity::Root,
            "ASIAEXAMPLEEXAMPLE01",
            Some(until),
        );
        assert!(c.is_root());
        assert_eq!(c.user(), None);
        assert_eq!(c.user_name(), None);
        assert_eq!(c.account_id(), "123456789012");
        assert_eq!(c.access_key_id(), "ASIAEXAMPLEEXAMPLE01");
        assert_eq!(c.arn(), "arn:aws:iam::123456789012:root");
        assert_eq!(c.user_id(), "123456789012");
        assert_eq!(c.session_expires(), Some(until));
        assert!(c.is_session());
        let debug = format!("{c:?}");
        assert!(
            debug.contains("ASIAEXAMPLEEXAMPLE01") && debug.contains("user: None"),
            "{debug}"
        );
    }
}
