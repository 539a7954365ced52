//! Findings: what the doctor reports, each with a stable code.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

use crate::ini::Pos;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $s:literal ),* $(,)?) => {
        /// The stable identifier of a kind of finding. Its string form (`as_str`) is part of the
        /// JSON output and of `keyward explain`; it never changes once released.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The kebab-case string form, e.g. `env-overrides-profile`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $s, )* }
            }

            /// The code whose string form is `s`.
            pub fn parse(s: &str) -> Option<Code> {
                match s { $( $s => Some(Code::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    /// Environment keys win over the profile named by `AWS_PROFILE` (or are ignored under `--profile`).
    EnvOverridesProfile = "env-overrides-profile",
    /// The selected profile exists in neither file.
    ProfileNotFound = "profile-not-found",
    /// A key id without a secret (or a secret without a key id).
    PartialCredentials = "partial-credentials",
    /// The profile selects a provider without the settings it needs, or its source profiles loop
    /// (botocore's InvalidConfigError, InfiniteLoopConfigError).
    InvalidConfig = "invalid-config",
    /// `aws_access_key_id =` with nothing after it: present, so it wins, and unusable.
    EmptyKeyId = "empty-key-id",
    /// The access key id is not 20 characters of `A-Z2-7` with a known prefix.
    KeyIdFormat = "key-id-format",
    /// The secret is not 40 characters of `A-Za-z0-9+/`.
    SecretFormat = "secret-format",
    /// The key id and the secret are in each other's place.
    KeySecretSwapped = "key-secret-swapped",
    /// Whitespace, CR, tab, quotes, comment text, non-ASCII or zero-width characters inside a value.
    HiddenCharacters = "hidden-characters",
    /// The file starts with a UTF-8 byte order mark.
    Bom = "bom",
    /// The file is not UTF-8 (UTF-16 from some editors, Latin-1, binary).
    NotUtf8 = "not-utf8",
    /// A section header appears twice in one file.
    DuplicateSection = "duplicate-section",
    /// A key appears twice in one section.
    DuplicateKey = "duplicate-key",
    /// An indented line was joined to the previous value, or a nested block is malformed.
    ContinuationLine = "continuation-line",
    /// Text before the first `[section]`.
    NoSectionHeader = "no-section-header",
    /// A line that is neither a section, a comment nor `key = value`.
    InvalidLine = "invalid-line",
    /// A section name that does not mean what it looks like in that file.
    SectionName = "section-name",
    /// Both `[default]` and `[profile default]` in the config file.
    DefaultProfileConflict = "default-profile-conflict",
    /// A key name close to a credential or profile setting that botocore does not read.
    MisspelledKey = "misspelled-key",
    /// The session token is in one file and the keys in the other: the token is dropped.
    TokenInOtherFile = "token-in-other-file",
    /// A session token next to a long-term (`AKIA`) key: a stale token.
    TokenOnLongTermKey = "token-on-long-term-key",
    /// A temporary (`ASIA`) key without its session token.
    TemporaryKeyWithoutToken = "temporary-key-without-token",
    /// `AWS_SECURITY_TOKEN` and `AWS_SESSION_TOKEN` (or the file keys) disagree.
    ConflictingTokenVars = "conflicting-token-vars",
    /// The credentials' stated expiry is in the past.
    CredentialsExpired = "credentials-expired",
    /// The credentials file can be read by other users.
    FilePermissions = "file-permissions",
    /// A config or credentials file exists but cannot be read: botocore silently treats it as empty.
    FileUnreadable = "file-unreadable",
    /// The region is not a name the CLI accepts (botocore's check), or is empty.
    InvalidRegion = "invalid-region",
    /// Requests go to an endpoint other than AWS's default for the region.
    EndpointOverride = "endpoint-override",
    /// The account encoded in the key id is not the account the profile or environment expects.
    AccountMismatch = "account-mismatch",
    /// No provider in the chain produced credentials.
    NoCredentials = "no-credentials",
    /// The winning provider fetches credentials at run time (role, SSO, process, metadata): not
    /// inspected offline.
    ProviderNotChecked = "provider-not-checked",
    /// The live probe did not run (offline, or not available).
    ProbeUnavailable = "probe-unavailable",
    /// Live: AWS does not know the access key id (or it is inactive or deleted).
    KeyUnknown = "key-unknown",
    /// Live: the key id is known but the signature is wrong (secret wrong or mangled).
    SignatureMismatch = "signature-mismatch",
    /// Live: the session token has expired.
    TokenExpired = "token-expired",
    /// Live: the local clock differs from AWS's by more than the allowed skew.
    ClockSkew = "clock-skew",
    /// Live: the endpoint could not be reached.
    EndpointUnreachable = "endpoint-unreachable",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How bad a finding is. Any `Error` makes `keyward doctor` exit 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Requests will fail, or go somewhere unintended.
    Error,
    /// Likely a mistake, or a trap for other tools.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// `error`, `warning` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A place in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (characters).
    pub col: u32,
}

impl Location {
    /// A location at `pos` in `path`.
    pub fn new(path: impl Into<PathBuf>, pos: Pos) -> Self {
        Location {
            path: path.into(),
            line: pos.line,
            col: pos.col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

/// One thing the doctor found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: Code,
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong, in plain words. Never contains a secret.
    pub message: String,
    /// The exact command or edit that fixes it.
    pub fix: String,
    /// Where, when a file is involved.
    pub location: Option<Location>,
}

impl Finding {
    /// A finding without a location.
    pub fn new(
        code: Code,
        severity: Severity,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            code,
            severity,
            message: message.into(),
            fix: fix.into(),
            location: None,
        }
    }

    /// The same finding, located.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_kebab_case() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }
}
