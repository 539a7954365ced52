//! Input checks, so that whatever reaches an engine satisfies IAM's constraints whatever the caller.
//!
//! The server validates requests against the service model first and reports `ValidationError`s in
//! AWS's words; these checks are the store's own guard and their messages are shorter.

use crate::model::Tag;
use crate::StoreError;

/// Most tags a user may carry.
pub(crate) const MAX_TAGS_PER_USER: usize = 50;

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidInput(msg)
}

/// IAM user names: 1..64 of `[\w+=,.@-]`.
pub(crate) fn user_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(ok_char) {
        return Err(invalid(format!(
            "invalid user name {name:?}: 1 to 64 characters of [\\w+=,.@-]"
        )));
    }
    Ok(())
}

/// The name of a user looked up: IAM's existingUserNameType allows 1 to 128 characters, so a
/// well-formed name longer than any user's (65 to 128) is `NoSuchEntity`, as in IAM, and only a
/// malformed one is invalid.
pub(crate) fn existing_user_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b);
    if (65..=128).contains(&name.len()) && name.bytes().all(ok_char) {
        return Err(StoreError::no_such_user(name));
    }
    user_name(name)
}

/// The case-folded form under which user names and tag keys are unique.
pub(crate) fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// IAM paths: `/`, or `/` + printable ASCII + `/`, at most 512 characters.
pub(crate) fn path(path: &str) -> Result<(), StoreError> {
    let ok = path == "/"
        || (path.len() >= 3
            && path.len() <= 512
            && path.starts_with('/')
            && path.ends_with('/')
            && path.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    if !ok {
        return Err(invalid(format!(
            "invalid path {path:?}: \"/\" or printable ASCII between two slashes, at most 512 characters"
        )));
    }
    Ok(())
}

/// A path prefix filter: empty means everything, otherwise IAM's `\u002F[\u0021-\u007F]*`, at most
/// 512 characters (DEL is allowed here though no path can hold it: such a prefix matches nothing).
pub(crate) fn path_prefix(prefix: &str) -> Result<(), StoreError> {
    if !prefix.is_empty()
        && (!prefix.starts_with('/')
            || prefix.len() > 512
            || !prefix.bytes().all(|b| (0x21..=0x7f).contains(&b)))
    {
        return Err(invalid(format!("invalid path prefix {prefix:?}")));
    }
    Ok(())
}

/// Tags: keys 1..128, values 0..256 characters, no key twice ignoring case.
pub(crate) fn tags(tags: &[Tag]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        tag_key(&t.key)?;
        if t.value.chars().count() > 256 {
            return Err(invalid(format!(
                "tag value for {:?} is longer than 256 characters",
                t.key
            )));
        }
        if !seen.insert(fold(&t.key)) {
            return Err(invalid(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn tag_key(key: &str) -> Result<(), StoreError> {
    let n = key.chars().count();
    if n == 0 || n > 128 {
        return Err(invalid(format!(
            "invalid tag key {key:?}: 1 to 128 characters"
        )));
    }
    Ok(())
}

/// Account aliases: `^[a-z0-9]([a-z0-9]|-(?!-)){1,61}[a-z0-9]$`.
pub(crate) fn account_alias(alias: &str) -> Result<(), StoreError> {
    let b = alias.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !alias.contains("--");
    if !ok {
        return Err(invalid(format!(
            "invalid account alias {alias:?}: 3 to 63 lowercase letters, digits and single dashes, \
             not starting or ending with a dash"
        )));
    }
    Ok(())
}

pub(crate) fn account_id(id: &str) -> Result<(), StoreError> {
    if !keyward_ids::is_account_id(id) {
        return Err(invalid(format!("invalid account id {id:?}: 12 digits")));
    }
    Ok(())
}

pub(crate) fn account_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "invalid account name {name:?}: 1 to 64 characters, no control characters"
        )));
    }
    Ok(())
}

/// Access key ids given by an operator (bootstrap): 20 characters of base32 starting `AKIA`.
pub(crate) fn long_term_key_id(key_id: &str) -> Result<(), StoreError> {
    if keyward_ids::key_kind(key_id) != Some(keyward_ids::KeyKind::LongTerm) {
        return Err(invalid(format!(
            "invalid access key id {key_id:?}: 20 characters of [A-Z2-7] starting with AKIA"
        )));
    }
    Ok(())
}

/// Secrets given by an operator: 1 to 128 printable ASCII characters.
pub(crate) fn secret(secret: &str) -> Result<(), StoreError> {
    if secret.is_empty()
        || secret.len() > 128
        || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(invalid(
            "invalid secret access key: 1 to 128 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_aliases() {
        assert!(user_name("bob+ci=x,y.z@w-_1").is_ok());
        assert!(user_name("").is_err());
        assert!(user_name("bad name").is_err());
        assert!(user_name(&"a".repeat(65)).is_err());
        // Looked up, a well-formed name too long for a user is one nobody has.
        assert!(matches!(
            existing_user_name(&"a".repeat(65)),
            Err(StoreError::NoSuchEntity(_))
        ));
        assert!(matches!(
            existing_user_name(&"a".repeat(128)),
            Err(StoreError::NoSuchEntity(_))
        ));
        assert!(matches!(
            existing_user_name(&"a".repeat(129)),
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            existing_user_name(&"é".repeat(40)),
            Err(StoreError::InvalidInput(_))
        ));
        assert!(existing_user_name("bob").is_ok());
        assert!(path("/").is_ok() && path("/a/b/").is_ok());
        assert!(path("a/").is_err() && path("/a").is_err() && path("//").is_err());
        assert!(account_alias("my-corp1").is_ok());
        for bad in ["ab", "-ab", "ab-", "a--b", "Abc", "a_b"] {
            assert!(account_alias(bad).is_err(), "{bad}");
        }
        assert!(tags(&[Tag::new("K", "1"), Tag::new("k", "2")]).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// The validators answer any string without panicking, and accept exactly IAM's shapes.
        #[test]
        fn validators_never_panic_and_match_iam(s in any::<String>()) {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
            let name_ok = !s.is_empty() && s.len() <= 64 && s.chars().all(ok_char);
            prop_assert_eq!(user_name(&s).is_ok(), name_ok);
            prop_assert_eq!(existing_user_name(&s).is_ok(), name_ok);
            let printable = |c: char| ('!'..='~').contains(&c);
            let path_ok = s == "/" || (s.len() >= 3 && s.len() <= 512 && s.starts_with('/') && s.ends_with('/') && s.chars().all(printable));
            prop_assert_eq!(path(&s).is_ok(), path_ok);
            let prefix_ok = s.is_empty() || (s.starts_with('/') && s.len() <= 512 && s.chars().all(|c| ('!'..='\u{7f}').contains(&c)));
            prop_assert_eq!(path_prefix(&s).is_ok(), prefix_ok);
            let _ = fold(&s);
        }

        #[test]
        fn valid_names_and_paths_pass(name in "[A-Za-z0-9_+=,.@-]{1,64}", p in "/([!-~]{1,20}/)?") {
            prop_assert!(user_name(&name).is_ok());
            prop_assert!(path(&p).is_ok());
            prop_assert!(path_prefix(&p).is_ok());
        }
    }
}
