//! Who made an authenticated request.

use std::time::SystemTime;

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

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The 12-digit account the caller belongs to.
    pub account_id: String,
    /// Root or an IAM user.
    pub identity: Identity,
    /// The access key id the request was signed with.
    pub access_key_id: String,
    /// For temporary credentials (GetSessionToken), when they expire.
    pub session_expires: Option<SystemTime>,
}

impl Caller {
    /// The caller's ARN as GetCallerIdentity and AccessDenied messages show it.
    pub fn arn(&self) -> String {
        match &self.identity {
            Identity::Root => format!("arn:aws:iam::{}:root", self.account_id),
            Identity::User { arn, .. } => arn.clone(),
        }
    }

    /// The caller's UserId as GetCallerIdentity shows it (the account id for root).
    pub fn user_id(&self) -> &str {
        match &self.identity {
            Identity::Root => &self.account_id,
            Identity::User { user_id, .. } => user_id,
        }
    }

    /// The IAM user name, or `None` for root.
    pub fn user_name(&self) -> Option<&str> {
        match &self.identity {
            Identity::Root => None,
            Identity::User { name, .. } => Some(name),
        }
    }

    /// True for temporary (session) credentials.
    pub fn is_session(&self) -> bool {
        self.session_expires.is_some()
    }
}

/// The ARN of user `name` with `path` in `account_id`.
pub fn user_arn(account_id: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account_id}:user{path}{name}")
}
