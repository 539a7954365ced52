//! Session tokens: self-contained and sealed, so any node holding the master key verifies them without
//! a store write per issuance.
//!
//! A token is base64 of an AEAD-sealed record (XChaCha20-Poly1305 under a key derived from the master
//! key for this purpose only) whose associated data is the temporary access key id: a token cannot be
//! replayed with another key id, and any change to it fails authentication.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyward_store::Sealer;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The purpose string the session-token key is derived under.
pub const SESSION_TOKEN_PURPOSE: &str = "keyward session token v1";

const VERSION: &str = "kw1";

/// What a session token carries.
pub struct SessionClaims {
    /// The account.
    pub account_id: String,
    /// The temporary access key id (`ASIA...`).
    pub access_key_id: String,
    /// The temporary secret.
    pub secret: keyward_sigv4::SecretKey,
    /// When the credentials expire.
    pub expires: SystemTime,
    /// The IAM user (name, user id) the session belongs to; `None` for root.
    pub user: Option<(String, String)>,
    /// The long-term key the session was obtained with.
    pub source_key_id: String,
}

impl fmt::Debug for SessionClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClaims")
            .field("account_id", &self.account_id)
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .field("expires", &self.expires)
            .field("user", &self.user)
            .field("source_key_id", &self.source_key_id)
            .finish()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours, altered, or for another key id.
    Invalid,
    /// A genuine token whose credentials have expired.
    Expired,
}

/// Seals `claims` into a token.
pub fn seal(sealer: &Sealer, claims: &SessionClaims) -> String {
    seal_at_least(sealer, claims, 0)
}

/// Seals `claims` into a token of at least `min_len` bytes (GetSessionToken's
/// `MinimumSessionTokenSize`): the record then ends with a ninth field of filler, sealed with the
/// rest, which [`open`] ignores.
pub fn seal_at_least(sealer: &Sealer, claims: &SessionClaims, min_len: usize) -> String {
    let expires = claims
        .expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (user_name, user_id) = match &claims.user {
        Some((n, i)) => (n.as_str(), i.as_str()),
        None => ("", ""),
    };
    let record = zeroize::Zeroizing::new(format!(
        "{VERSION}\n{}\n{}\n{}\n{expires}\n{user_name}\n{user_id}\n{}",
        claims.account_id,
        claims.access_key_id,
        claims.secret.expose(),
        claims.source_key_id
    ));
    let seal_with = |filler: usize| {
        let mut padded = zeroize::Zeroizing::new(record.as_bytes().to_vec());
        if filler > 0 {
            padded.push(b'\n');
            let len = padded.len() + filler - 1;
            padded.resize(len, b'-');
        }
        STANDARD.encode(sealer.seal(&padded, claims.access_key_id.as_bytes()))
    };
    let mut token = seal_with(0);
    // Base64 turns 3 bytes into 4: grow the filler by what is missing, until long enough.
    let mut filler = 0;
    while token.len() < min_len {
        filler += (min_len - token.len()).div_ceil(4) * 3 + usize::from(filler == 0);
        token = seal_with(filler);
    }
    token
}

/// Opens `token` presented with `access_key_id`, checking expiry against `now`.
pub fn open(
    sealer: &Sealer,
    token: &str,
    access_key_id: &str,
    now: SystemTime,
) -> Result<SessionClaims, TokenError> {
    let sealed = STANDARD
        .decode(token.trim())
        .map_err(|_| TokenError::Invalid)?;
    let plain = sealer
        .open(&sealed, access_key_id.as_bytes())
        .map_err(|_| TokenError::Invalid)?;
    let text = std::str::from_utf8(&plain).map_err(|_| TokenError::Invalid)?;
    let f: Vec<&str> = text.split('\n').collect();
    // A ninth field is filler (see `seal_at_least`).
    if !(f.len() == 8 || f.len() == 9) || f[0] != VERSION || f[2] != access_key_id {
        return Err(TokenError::Invalid);
    }
    let expires = UNIX_EPOCH + Duration::from_secs(f[4].parse().map_err(|_| TokenError::Invalid)?);
    let claims = SessionClaims {
        account_id: f[1].to_owned(),
        access_key_id: f[2].to_owned(),
        secret: keyward_sigv4::SecretKey::new(f[3].to_owned()),
        expires,
        user: (!f[5].is_empty()).then(|| (f[5].to_owned(), f[6].to_owned())),
        source_key_id: f[7].to_owned(),
    };
    if now >= expires {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> Sealer {
        Sealer::new(&[7u8; 32])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random text, base64 of random bytes, and altered genuine tokens are refused, never a panic.
        #[test]
        fn random_tokens_are_invalid(text in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            prop_assert_eq!(open(&sealer(), &text, "ASIAQAAAAAAAAAAAAAAA", now).err(), Some(TokenError::Invalid));
            let b64 = STANDARD.encode(&bytes);
            prop_assert_eq!(open(&sealer(), &b64, "ASIAQAAAAAAAAAAAAAAA", now).err(), Some(TokenError::Invalid));
        }

        #[test]
        fn sealed_tokens_open_and_any_change_is_refused(
            secret in "[A-Za-z0-9/+]{40}",
            user in proptest::option::of(("[A-Za-z0-9_+=,.@-]{1,64}", "AIDA[A-Z2-7]{17}")),
            ttl in 1u64..200_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let claims = SessionClaims {
                account_id: "123456789012".into(),
                access_key_id: "ASIAQAAAAAAAAAAAAAAA".into(),
                secret: keyward_sigv4::SecretKey::new(secret.clone()),
                expires: now + Duration::from_secs(ttl),
                user: user.clone(),
                source_key_id: "AKIAQAAAAAAAAAAAAAAA".into(),
            };
            let token = seal(&sealer(), &claims);
            let back = open(&sealer(), &token, "ASIAQAAAAAAAAAAAAAAA", now).unwrap();
            prop_assert_eq!(back.secret.expose(), secret.as_str());
            prop_assert_eq!(back.user, user);
            prop_assert_eq!(open(&sealer(), &token, "ASIAQAAAAAAAAAAAAAAB", now).err(), Some(TokenError::Invalid));
            prop_assert_eq!(
                open(&sealer(), &token, "ASIAQAAAAAAAAAAAAAAA", now + Duration::from_secs(ttl)).err(),
                Some(TokenError::Expired)
            );
            // Padded to a minimum size, the token still opens to the same claims.
            let long = seal_at_least(&sealer(), &claims, 4096);
            prop_assert!(long.len() >= 4096 && long.len() < 4096 + 8, "{}", long.len());
            let again = open(&sealer(), &long, "ASIAQAAAAAAAAAAAAAAA", now).unwrap();
            prop_assert_eq!(again.user, claims.user.clone());
            prop_assert_eq!(again.secret.expose(), claims.secret.expose());
            let mut raw = STANDARD.decode(&token).unwrap();
            let i = flip.index(raw.len());
            raw[i] ^= 1;
            prop_assert_eq!(
                open(&sealer(), &STANDARD.encode(&raw), "ASIAQAAAAAAAAAAAAAAA", now).err(),
                Some(TokenError::Invalid)
            );
        }
    }
}
