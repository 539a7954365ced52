//! Input validation as AWS does it: every member checked against the constraints of the service model
//! (`min`, `max`, `pattern`, `enum`, required, integer ranges) before anything is looked up, all failures
//! counted in one `ValidationError`.
//!
//! The constraints below are those of botocore's `iam` and `sts` service models; each rule names the
//! model's shape it comes from.

use crate::error::ApiError;
use std::fmt::Write;

/// A pattern of the service model, with the exact text AWS quotes in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `[\w+=,.@-]+` (userNameType, existingUserNameType).
    Name,
    /// `[\w+=,.@-]*` (roleSessionNameType).
    NameOrEmpty,
    /// `(\u002F)|(\u002F[\u0021-\u007E]+\u002F)` (pathType).
    Path,
    /// `\u002F[\u0021-\u007F]*` (pathPrefixType).
    PathPrefix,
    /// `[\p{L}\p{Z}\p{N}_.:/=+\-@]+` (tagKeyType).
    TagKey,
    /// `[\p{L}\p{Z}\p{N}_.:/=+\-@]*` (tagValueType).
    TagValue,
    /// `[\w]+` (IAM accessKeyIdType).
    Word,
    /// `[\w]*` (STS accessKeyIdType).
    WordOrEmpty,
    /// `[\u0020-\u00FF]+` (markerType).
    Marker,
    /// `^[a-z0-9]([a-z0-9]|-(?!-)){1,61}[a-z0-9]$` (accountAliasType).
    AccountAlias,
    /// `[\w+=/:,.@-]*` (serialNumberType).
    SerialNumber,
    /// `[\d]*` (tokenCodeType).
    Digits,
}

impl Pattern {
    /// The pattern's text as the model (and AWS's message) writes it.
    pub fn text(self) -> &'static str {
        match self {
            Self::Name => r"[\w+=,.@-]+",
            Self::NameOrEmpty => r"[\w+=,.@-]*",
            Self::Path => r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
            Self::PathPrefix => r"\u002F[\u0021-\u007F]*",
            Self::TagKey => r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+",
            Self::TagValue => r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*",
            Self::Word => r"[\w]+",
            Self::WordOrEmpty => r"[\w]*",
            Self::Marker => r"[\u0020-\u00FF]+",
            Self::AccountAlias => r"^[a-z0-9]([a-z0-9]|-(?!-)){1,61}[a-z0-9]$",
            Self::SerialNumber => r"[\w+=/:,.@-]*",
            Self::Digits => r"[\d]*",
        }
    }

    /// True when `s` matches the whole pattern.
    pub fn matches(self, s: &str) -> bool {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let name = |c: char| word(c) || "+=,.@-".contains(c);
        let tag = |c: char| {
            c.is_alphabetic() || c.is_numeric() || is_separator(c) || "_.:/=+-@".contains(c)
        };
        match self {
            Self::Name => !s.is_empty() && s.chars().all(name),
            Self::NameOrEmpty => s.chars().all(name),
            Self::Path => {
                s == "/"
                    || (s.len() >= 3
                        && s.starts_with('/')
                        && s.ends_with('/')
                        && s.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c)))
            }
            Self::PathPrefix => {
                s.starts_with('/') && s.chars().all(|c| ('\u{21}'..='\u{7f}').contains(&c))
            }
            Self::TagKey => !s.is_empty() && s.chars().all(tag),
            Self::TagValue => s.chars().all(tag),
            Self::Word => !s.is_empty() && s.chars().all(word),
            Self::WordOrEmpty => s.chars().all(word),
            Self::Marker => !s.is_empty() && s.chars().all(|c| ('\u{20}'..='\u{ff}').contains(&c)),
            Self::AccountAlias => {
                let b = s.as_bytes();
                let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                (3..=63).contains(&b.len())
                    && ok(b[0])
                    && ok(b[b.len() - 1])
                    && b.iter().all(|&c| ok(c) || c == b'-')
                    && !s.contains("--")
            }
            Self::SerialNumber => s.chars().all(|c| word(c) || "+=/:,.@-".contains(c)),
            Self::Digits => s.chars().all(|c| c.is_ascii_digit()),
        }
    }
}

/// Unicode separators (`\p{Z}`): space separators, line and paragraph separators.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// The constraints on one string member.
#[derive(Debug, Clone, Copy)]
pub struct StrRule {
    /// Minimum length in characters.
    pub min: usize,
    /// Maximum length in characters.
    pub max: usize,
    /// Pattern the whole value must match.
    pub pattern: Option<Pattern>,
}

/// userNameType: a new user name.
pub const USER_NAME: StrRule = StrRule {
    min: 1,
    max: 64,
    pattern: Some(Pattern::Name),
};
/// existingUserNameType: the name of an existing user.
pub const EXISTING_USER_NAME: StrRule = StrRule {
    min: 1,
    max: 128,
    pattern: Some(Pattern::Name),
};
/// pathType.
pub const PATH: StrRule = StrRule {
    min: 1,
    max: 512,
    pattern: Some(Pattern::Path),
};
/// pathPrefixType.
pub const PATH_PREFIX: StrRule = StrRule {
    min: 1,
    max: 512,
    pattern: Some(Pattern::PathPrefix),
};
/// markerType.
pub const MARKER: StrRule = StrRule {
    min: 1,
    max: 320,
    pattern: Some(Pattern::Marker),
};
/// tagKeyType.
pub const TAG_KEY: StrRule = StrRule {
    min: 1,
    max: 128,
    pattern: Some(Pattern::TagKey),
};
/// tagValueType.
pub const TAG_VALUE: StrRule = StrRule {
    min: 0,
    max: 256,
    pattern: Some(Pattern::TagValue),
};
/// IAM accessKeyIdType.
pub const ACCESS_KEY_ID: StrRule = StrRule {
    min: 16,
    max: 128,
    pattern: Some(Pattern::Word),
};
/// STS accessKeyIdType.
pub const STS_ACCESS_KEY_ID: StrRule = StrRule {
    min: 16,
    max: 128,
    pattern: Some(Pattern::WordOrEmpty),
};
/// accountAliasType.
pub const ACCOUNT_ALIAS: StrRule = StrRule {
    min: 3,
    max: 63,
    pattern: Some(Pattern::AccountAlias),
};
/// serialNumberType.
pub const SERIAL_NUMBER: StrRule = StrRule {
    min: 9,
    max: 256,
    pattern: Some(Pattern::SerialNumber),
};
/// tokenCodeType.
pub const TOKEN_CODE: StrRule = StrRule {
    min: 6,
    max: 6,
    pattern: Some(Pattern::Digits),
};
/// arnType.
pub const ARN: StrRule = StrRule {
    min: 20,
    max: 2048,
    pattern: None,
};
/// roleSessionNameType.
pub const ROLE_SESSION_NAME: StrRule = StrRule {
    min: 2,
    max: 64,
    pattern: Some(Pattern::NameOrEmpty),
};

/// Collects validation failures; [`Validator::finish`] turns them into AWS's `ValidationError`.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<String>,
    /// Messages name the member only (`Value at 'userName' ...`), without its value or an enum's
    /// set: see [`Validator::without_values`].
    hide_values: bool,
}

impl Validator {
    /// A validator with no failures yet, whose messages quote the value (`Value 'x' at 'member'
    /// ...`, `Value null at ...`), as STS's do.
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator whose messages name the member but not the value, and not an enum's allowed
    /// set, as IAM's are worded today: `1 validation error detected: Value at 'tags.1.member.key'
    /// failed to satisfy constraint: ...` (responses recorded from AWS in LocalStack's validated
    /// IAM snapshots, 2025-2026).
    pub fn without_values() -> Self {
        Validator {
            errors: Vec::new(),
            hide_values: true,
        }
    }

    fn fail(&mut self, value: Option<&str>, member: &str, constraint: &str) {
        let mut m = String::new();
        match value {
            _ if self.hide_values => {
                let _ = write!(
                    m,
                    "Value at '{member}' failed to satisfy constraint: {constraint}"
                );
            }
            Some(v) => {
                let _ = write!(
                    m,
                    "Value '{v}' at '{member}' failed to satisfy constraint: {constraint}"
                );
            }
            None => {
                let _ = write!(
                    m,
                    "Value null at '{member}' failed to satisfy constraint: {constraint}"
                );
            }
        }
        self.errors.push(m);
    }

    /// Checks a string member; `member` is the lower-camel name AWS quotes (e.g. `userName`).
    /// Returns the value when present (even if invalid: the failure is recorded).
    pub fn string<'a>(
        &mut self,
        member: &str,
        value: Option<&'a str>,
        rule: StrRule,
        required: bool,
    ) -> Option<&'a str> {
        let Some(v) = value else {
            if required {
                self.fail(None, member, "Member must not be null");
            }
            return None;
        };
        let len = v.chars().count();
        if len < rule.min {
            self.fail(
                Some(v),
                member,
                &format!(
                    "Member must have length greater than or equal to {}",
                    rule.min
                ),
            );
        }
        if len > rule.max {
            self.fail(
                Some(v),
                member,
                &format!("Member must have length less than or equal to {}", rule.max),
            );
        }
        if let Some(p) = rule.pattern {
            // An empty value already failed its length; AWS reports the pattern only for non-empty ones.
            if !v.is_empty() && !p.matches(v) {
                self.fail(
                    Some(v),
                    member,
                    &format!(
                        "Member must satisfy regular expression pattern: {}",
                        p.text()
                    ),
                );
            }
        }
        Some(v)
    }

    /// Checks an integer member against `min..=max`.
    pub fn integer(
        &mut self,
        member: &str,
        value: Option<&str>,
        min: i64,
        max: i64,
        required: bool,
    ) -> Option<i64> {
        let Some(raw) = value else {
            if required {
                self.fail(None, member, "Member must not be null");
            }
            return None;
        };
        let Ok(n) = raw.trim().parse::<i64>() else {
            self.fail(Some(raw), member, "Member must be an integer");
            return None;
        };
        if n < min {
            self.fail(
                Some(raw),
                member,
                &format!("Member must have value greater than or equal to {min}"),
            );
        }
        if n > max {
            self.fail(
                Some(raw),
                member,
                &format!("Member must have value less than or equal to {max}"),
            );
        }
        Some(n)
    }

    /// Checks an enum member.
    pub fn enumeration<'a>(
        &mut self,
        member: &str,
        value: Option<&'a str>,
        allowed: &[&str],
        required: bool,
    ) -> Option<&'a str> {
        let Some(v) = value else {
            if required {
                self.fail(None, member, "Member must not be null");
            }
            return None;
        };
        if !allowed.contains(&v) {
            let constraint = if self.hide_values {
                "Member must satisfy enum value set".to_owned()
            } else {
                format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                )
            };
            self.fail(Some(v), member, &constraint);
        }
        Some(v)
    }

    /// Checks the length of a list member.
    pub fn list_len(&mut self, member: &str, len: usize, max: usize) {
        if len > max {
            let value = if self.hide_values { "" } else { " '[...]'" };
            self.errors.push(format!(
                "Value{value} at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
            ));
        }
    }

    /// Records a failure with a ready message (for checks the model does not express).
    pub fn custom(&mut self, message: String) {
        self.errors.push(message);
    }

    /// True when nothing failed so far.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())`, or AWS's `ValidationError` counting every failure.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.errors.len() {
            0 => Ok(()),
            1 => Err(ApiError::new(
                400,
                "ValidationError",
                format!("1 validation error detected: {}", self.errors[0]),
            )),
            n => Err(ApiError::new(
                400,
                "ValidationError",
                format!("{n} validation errors detected: {}", self.errors.join("; ")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_is_worded_as_aws() {
        let mut v = Validator::new();
        v.string("userName", Some("bad name!"), USER_NAME, true);
        let e = v.finish().unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            r"1 validation error detected: Value 'bad name!' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]+"
        );
    }

    #[test]
    fn several_failures_are_counted() {
        let mut v = Validator::new();
        v.string("userName", None, USER_NAME, true);
        v.integer("maxItems", Some("0"), 1, 1000, false);
        v.enumeration(
            "status",
            Some("On"),
            &["Active", "Inactive", "Expired"],
            true,
        );
        let e = v.finish().unwrap_err();
        assert_eq!(
            e.message,
            "3 validation errors detected: Value null at 'userName' failed to satisfy constraint: Member must not be null; Value '0' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1; Value 'On' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive, Expired]"
        );
    }

    #[test]
    fn without_values_names_only_the_member() {
        let mut v = Validator::without_values();
        v.string("userName", None, USER_NAME, true);
        v.string("tags.1.member.key", Some("bad!key"), TAG_KEY, true);
        v.integer("maxItems", Some("0"), 1, 1000, false);
        v.enumeration("status", Some("On"), &["Active", "Inactive"], true);
        v.list_len("tags", 51, 50);
        let e = v.finish().unwrap_err();
        assert_eq!(
            e.message,
            concat!(
                "5 validation errors detected: ",
                "Value at 'userName' failed to satisfy constraint: Member must not be null; ",
                r"Value at 'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+; ",
                "Value at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1; ",
                "Value at 'status' failed to satisfy constraint: Member must satisfy enum value set; ",
                "Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"
            )
        );
    }

    #[test]
    fn length_and_pattern_both_reported() {
        let mut v = Validator::new();
        let long = "x".repeat(65) + "!";
        v.string("userName", Some(&long), USER_NAME, true);
        let e = v.finish().unwrap_err();
        assert!(
            e.message.starts_with("2 validation errors detected"),
            "{}",
            e.message
        );
    }

    #[test]
    fn patterns() {
        assert!(Pattern::Name.matches("a.b+c=d,e@f-g_h9"));
        assert!(!Pattern::Name.matches("a b") && !Pattern::Name.matches(""));
        assert!(Pattern::Path.matches("/") && Pattern::Path.matches("/a/b/"));
        assert!(
            !Pattern::Path.matches("/a")
                && !Pattern::Path.matches("//")
                && !Pattern::Path.matches("a/")
        );
        assert!(Pattern::PathPrefix.matches("/") && Pattern::PathPrefix.matches("/a"));
        assert!(Pattern::TagKey.matches("Cost Center:é/1") && !Pattern::TagKey.matches("a*b"));
        assert!(Pattern::TagValue.matches(""));
        assert!(
            Pattern::AccountAlias.matches("my-org-1") && !Pattern::AccountAlias.matches("a--b")
        );
        assert!(!Pattern::AccountAlias.matches("-ab") && !Pattern::AccountAlias.matches("Abc"));
        assert!(Pattern::Marker.matches("é ") && !Pattern::Marker.matches("\u{100}"));
    }
}
