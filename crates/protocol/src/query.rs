//! Parameters of the AWS query protocol: `application/x-www-form-urlencoded` bodies and query strings.
//!
//! `+` decodes to a space, `%XX` to a byte; the result must be UTF-8. Lists are flattened as
//! `Name.member.N` (1-based) and structures in lists as `Name.member.N.Field`.

use std::borrow::Cow;
use std::fmt;

/// Most parameters one request may carry; a request with more is refused before any work is done.
pub const MAX_PARAMS: usize = 1_000;
/// Highest list index accepted in `Name.member.N`.
pub const MAX_LIST_INDEX: usize = 1_000;

/// Why a form could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// More than [`MAX_PARAMS`] parameters.
    TooManyParameters,
    /// The same parameter given twice.
    Duplicate(String),
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPercentEncoding => {
                f.write_str("The request contains an invalid percent-encoded sequence.")
            }
            Self::NotUtf8 => f.write_str("The request parameters are not valid UTF-8."),
            Self::TooManyParameters => {
                write!(f, "The request has more than {MAX_PARAMS} parameters.")
            }
            Self::Duplicate(name) => write!(f, "The parameter {name} is given more than once."),
        }
    }
}

impl std::error::Error for FormError {}

/// Decoded query-protocol parameters, in the order received. A component with nothing to decode
/// borrows the form it came from (most of them: every request decodes at least `Action` and
/// `Version`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    /// Decodes a form body or a raw query string (without `?`) and adds its parameters.
    /// A parameter that appears twice, in one form or across both, is an error.
    pub fn extend_from_form(&mut self, form: &'a [u8]) -> Result<(), FormError> {
        for part in form.split(|&b| b == b'&') {
            if part.is_empty() {
                continue;
            }
            if self.pairs.len() >= MAX_PARAMS {
                return Err(FormError::TooManyParameters);
            }
            let (k, v) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let k = decode(k)?;
            let v = decode(v)?;
            if self.get(&k).is_some() {
                return Err(FormError::Duplicate(k.into_owned()));
            }
            self.pairs.push((k, v));
        }
        Ok(())
    }

    /// Parameters of one form.
    pub fn parse(form: &'a [u8]) -> Result<Self, FormError> {
        let mut p = Self::default();
        p.extend_from_form(form)?;
        Ok(p)
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| &**v)
    }

    /// True when no parameter is present.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every parameter, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The members of list `name` (`name.member.N`), ordered by N, as `(N, field, value)` where `field`
    /// is the rest after `name.member.N.` (empty for a list of scalars).
    ///
    /// Indices must be positive integers no larger than [`MAX_LIST_INDEX`]; others are reported as
    /// `Err(parameter name)`.
    pub fn list_entries(&self, name: &str) -> Result<Vec<(usize, &str, &str)>, String> {
        let prefix_len = name.len() + ".member.".len();
        let mut out = Vec::new();
        for (k, v) in self.iter() {
            let Some(rest) = k
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(".member."))
            else {
                continue;
            };
            debug_assert_eq!(k.len() - rest.len(), prefix_len);
            let (idx, field) = match rest.find('.') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let n: usize = match idx.parse() {
                Ok(n) if (1..=MAX_LIST_INDEX).contains(&n) && !idx.starts_with('0') => n,
                _ => return Err(k.to_owned()),
            };
            out.push((n, field, v));
        }
        out.sort_by_key(|(n, _, _)| *n);
        Ok(out)
    }

    /// True when any parameter belongs to list `name` (including the empty-list marker `name=`).
    pub fn has_list(&self, name: &str) -> bool {
        self.iter().any(|(k, _)| {
            k == name
                || k.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(".member."))
        })
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    decode(raw).map(Cow::into_owned)
}

/// [`decode_component`], borrowing `raw` when there is nothing to decode.
fn decode(raw: &[u8]) -> Result<Cow<'_, str>, FormError> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| FormError::NotUtf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_val);
                let lo = raw.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(FormError::BadPercentEncoding),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_empty_values() {
        let p = Params::parse(b"Action=CreateUser&UserName=a%2Bb+c&Path=%2F&Flag").unwrap();
        assert_eq!(p.get("Action"), Some("CreateUser"));
        assert_eq!(p.get("UserName"), Some("a+b c"));
        assert_eq!(p.get("Path"), Some("/"));
        assert_eq!(p.get("Flag"), Some(""));
        assert_eq!(p.get("Nope"), None);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(Params::parse(b"A=%zz"), Err(FormError::BadPercentEncoding));
        assert_eq!(Params::parse(b"A=%4"), Err(FormError::BadPercentEncoding));
        assert_eq!(Params::parse(b"A=%ff"), Err(FormError::NotUtf8));
        assert_eq!(
            Params::parse(b"A=1&A=2"),
            Err(FormError::Duplicate("A".into()))
        );
        let many: Vec<u8> = (0..=MAX_PARAMS)
            .map(|i| format!("p{i}=1&"))
            .collect::<String>()
            .into_bytes();
        assert_eq!(Params::parse(&many), Err(FormError::TooManyParameters));
    }

    #[test]
    fn lists_are_ordered_and_bounded() {
        let p = Params::parse(
            b"Tags.member.2.Key=b&Tags.member.1.Key=a&Tags.member.1.Value=x&TagKeys.member.1=k",
        )
        .unwrap();
        let e = p.list_entries("Tags").unwrap();
        assert_eq!(e, vec![(1, "Key", "a"), (1, "Value", "x"), (2, "Key", "b")]);
        assert_eq!(p.list_entries("TagKeys").unwrap(), vec![(1, "", "k")]);
        assert!(p.has_list("Tags") && !p.has_list("Nope"));
        for bad in [
            "Tags.member.0.Key=a",
            "Tags.member.-1.Key=a",
            "Tags.member.99999999999999999999.Key=a",
            "Tags.member.01.Key=a",
        ] {
            let p = Params::parse(bad.as_bytes()).unwrap();
            assert!(p.list_entries("Tags").is_err(), "{bad}");
        }
    }
}
