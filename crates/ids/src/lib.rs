//! AWS identifier formats, shared by the server, the store and the doctor.
//!
//! Modern AWS access key ids encode the owning account: after the four-letter prefix, base32 of
//! `account / 2 + 2^39` in five bytes, then one character whose alphabet half carries the lowest bit of
//! the account, then random characters up to twenty. [`account_of_key_id`] is the public decoding, and
//! every key id that [`new_access_key_id`] makes decodes back to its account.
#![forbid(unsafe_code)]

use rand::rngs::{OsRng, SmallRng};
use rand::{Rng, RngCore, SeedableRng};

/// The base32 alphabet of AWS identifiers (RFC 4648, no padding).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// The alphabet of secret access keys.
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Prefix of long-term access key ids.
pub const LONG_TERM_PREFIX: &str = "AKIA";
/// Prefix of temporary (session) access key ids.
pub const TEMPORARY_PREFIX: &str = "ASIA";
/// Prefix of IAM user ids.
pub const USER_ID_PREFIX: &str = "AIDA";

/// Length of an access key id.
pub const KEY_ID_LEN: usize = 20;
/// Length of a secret access key.
pub const SECRET_LEN: usize = 40;

/// 16 random bytes for identifiers that must be unique but are not secret: request ids and
/// audit event ids. They come from a fast per-thread generator (xoshiro256++, rand's `SmallRng`)
/// seeded from the operating system, at a few nanoseconds each instead of the ~100 ns of a
/// cryptographic generator; secrets and session keys never come from here (see [`new_secret_access_key`]).
pub fn unique_bytes() -> [u8; 16] {
    thread_local! {
        static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_entropy());
    }
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&r.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&r.next_u64().to_le_bytes());
        b
    })
}

/// What kind of access key an id names, from its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `AKIA`: a long-term IAM user or root key.
    LongTerm,
    /// `ASIA`: temporary credentials that need a session token.
    Temporary,
}

/// True when `s` is a well-formed 12-digit account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The kind of a well-formed access key id (20 chars of `A-Z2-7` with an `AKIA` or `ASIA` prefix), or `None`.
pub fn key_kind(key_id: &str) -> Option<KeyKind> {
    if key_id.len() != KEY_ID_LEN || !key_id.bytes().all(is_base32) {
        return None;
    }
    match &key_id[..4] {
        LONG_TERM_PREFIX => Some(KeyKind::LongTerm),
        TEMPORARY_PREFIX => Some(KeyKind::Temporary),
        _ => None,
    }
}

/// True when `key_id` is 20 characters of the base32 alphabet with any four-letter prefix.
pub fn is_well_formed_key_id(key_id: &str) -> bool {
    key_id.len() == KEY_ID_LEN && key_id.bytes().all(is_base32)
}

fn is_base32(b: u8) -> bool {
    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
}

fn base32_value(b: u8) -> Option<u64> {
    match b {
        b'A'..=b'Z' => Some(u64::from(b - b'A')),
        b'2'..=b'7' => Some(u64::from(b - b'2') + 26),
        _ => None,
    }
}

/// The 12-digit account id a modern access key id (or any AWS unique id of the same shape) encodes.
///
/// Returns `None` for ids that are not 20 base32 characters, and for old-style ids (`AKIAI...`,
/// `AKIAJ...`) whose bits do not carry an account.
pub fn account_of_key_id(key_id: &str) -> Option<String> {
    if !is_well_formed_key_id(key_id) {
        return None;
    }
    // Base32-decode the first 10 characters after the prefix (50 bits); the account sits in bits
    // 46..7 of the first 48 bits (six bytes) of the decoded payload.
    let mut bits: u64 = 0;
    for &b in key_id.as_bytes()[4..14].iter() {
        bits = (bits << 5) | base32_value(b)?;
    }
    let z = bits >> 2; // the first 48 bits
    if z & (1 << 47) == 0 {
        // Ids without the marker bit are of the old, non-decodable kind.
        return None;
    }
    let account = (z & 0x7FFF_FFFF_FF80) >> 7;
    let account = format!("{account:012}");
    (account.len() == 12).then_some(account)
}

/// A new access key id of `kind` that encodes `account_id` (12 digits).
///
/// # Panics
/// Never for a 12-digit account id; a caller passing anything else is a programming error and gets a
/// deterministic panic.
pub fn new_access_key_id(kind: KeyKind, account_id: &str) -> String {
    let account: u64 = account_id
        .parse()
        .ok()
        .filter(|_| is_account_id(account_id))
        .expect("account id must be 12 digits");
    let prefix = match kind {
        KeyKind::LongTerm => LONG_TERM_PREFIX,
        KeyKind::Temporary => TEMPORARY_PREFIX,
    };
    let mut id = String::with_capacity(KEY_ID_LEN);
    id.push_str(prefix);
    // Five bytes of (account / 2 + 2^39) make exactly eight base32 characters.
    let head = account / 2 + (1u64 << 39);
    for i in (0..8).rev() {
        id.push(BASE32[((head >> (i * 5)) & 31) as usize] as char);
    }
    // One read of the CSPRNG for all random characters (a system call each was a third of the
    // CPU of bulk key creation). The alphabets have 16 and 32 symbols, so masking a random byte
    // keeps every symbol equally likely.
    let mut random = [0u8; KEY_ID_LEN - 12];
    OsRng.fill_bytes(&mut random);
    // The ninth character: upper half of the alphabet for an odd account, lower half for even.
    let half = if account % 2 == 1 { 16 } else { 0 };
    id.push(BASE32[half + usize::from(random[0] & 15)] as char);
    for b in &random[1..] {
        id.push(BASE32[usize::from(b & 31)] as char);
    }
    debug_assert_eq!(id.len(), KEY_ID_LEN);
    id
}

/// A new secret access key: 40 characters of `[A-Za-z0-9+/]` from the operating system's CSPRNG.
pub fn new_secret_access_key() -> String {
    // One read of the CSPRNG; 64 symbols, so masking a random byte keeps them equally likely.
    let mut random = [0u8; SECRET_LEN];
    OsRng.fill_bytes(&mut random);
    random
        .iter()
        .map(|b| SECRET_ALPHABET[usize::from(b & 63)] as char)
        .collect()
}

/// A new unique id with `prefix` (for example [`USER_ID_PREFIX`]) that encodes `account_id`, 21 chars long.
pub fn new_unique_id(prefix: &str, account_id: &str) -> String {
    let mut id = new_access_key_id(KeyKind::LongTerm, account_id);
    id.replace_range(..4, prefix);
    let mut rng = OsRng;
    id.push(BASE32[rng.gen_range(0..32)] as char);
    id
}

/// A new random 12-digit account id (never starting with 0, as AWS's).
pub fn new_account_id() -> String {
    let mut rng = OsRng;
    format!("{}", rng.gen_range(100_000_000_000u64..1_000_000_000_000))
}

/// True when `s` looks like a secret access key: 40 characters of `[A-Za-z0-9+/]`.
pub fn is_well_formed_secret(s: &str) -> bool {
    s.len() == SECRET_LEN && s.bytes().all(|b| SECRET_ALPHABET.contains(&b))
}

/// Longest key id an [`InlineKeyId`] holds (keyward's are [`KEY_ID_LEN`] characters).
pub const INLINE_KEY_ID_MAX: usize = 32;

/// An access key id held inline, for tables looked up on every request: comparing keys then
/// touches the table only, not a string elsewhere on the heap (one cache miss fewer per lookup
/// when many keys are in use).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineKeyId {
    len: u8,
    bytes: [u8; INLINE_KEY_ID_MAX],
}

impl InlineKeyId {
    /// `None` for an id longer than [`INLINE_KEY_ID_MAX`] bytes.
    pub fn new(id: &str) -> Option<InlineKeyId> {
        let b = id.as_bytes();
        if b.len() > INLINE_KEY_ID_MAX {
            return None;
        }
        let mut bytes = [0; INLINE_KEY_ID_MAX];
        bytes[..b.len()].copy_from_slice(b);
        Some(InlineKeyId {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Made from a &str and cut at its own length: always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::hash::Hash for InlineKeyId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The id's own bytes only (the rest of the buffer is zeros); `str`'s hash, so it is
        // prefix-free as `Eq` requires.
        self.as_str().hash(state);
    }
}

/// A map keyed by [`InlineKeyId`], for the tables probed on every request (the key cache,
/// pending last uses). Hashed with foldhash, seeded per process: several times cheaper than
/// std's SipHash on 20-byte ids, and still not predictable from outside. Its keys are ids
/// of keys that exist, which a client does not choose.
pub type KeyIdMap<V> = std::collections::HashMap<InlineKeyId, V, foldhash::fast::RandomState>;

impl std::fmt::Debug for InlineKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_bytes_do_not_repeat_within_or_across_threads() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(unique_bytes()));
        }
        let other: Vec<[u8; 16]> =
            std::thread::spawn(|| (0..10_000).map(|_| unique_bytes()).collect())
                .join()
                .unwrap();
        for b in other {
            assert!(seen.insert(b), "another thread's generator is seeded apart");
        }
        // Every bit position takes both values (not a constant or a counter in a few bytes).
        let (mut or, mut and) = ([0u8; 16], [0xffu8; 16]);
        for b in &seen {
            for i in 0..16 {
                or[i] |= b[i];
                and[i] &= b[i];
            }
        }
        assert_eq!(or, [0xff; 16]);
        assert_eq!(and, [0; 16]);
    }

    #[test]
    fn inline_key_ids_round_trip_up_to_their_bound() {
        for id in [
            "",
            "AKIAIOSFODNN7EXAMPLE",
            "é-ünïcode",
            &"K".repeat(INLINE_KEY_ID_MAX),
        ] {
            let k = InlineKeyId::new(id).unwrap();
            assert_eq!(k.as_str(), id);
            assert_eq!(format!("{k:?}"), format!("{id:?}"));
        }
        assert!(InlineKeyId::new(&"K".repeat(INLINE_KEY_ID_MAX + 1)).is_none());
        // Equal ids are equal whatever the bytes were before (none: the buffer starts zeroed).
        assert_eq!(InlineKeyId::new("AKIA"), InlineKeyId::new("AKIA"));
        assert_ne!(InlineKeyId::new("AKIA"), InlineKeyId::new("AKIA\0"));
    }

    #[test]
    fn decodes_published_examples() {
        assert_eq!(
            account_of_key_id("AKIARZPUZDIKGB2VALC4").as_deref(),
            Some("123456789012")
        );
        assert_eq!(
            account_of_key_id("ASIAY34FZKBOKMUTVV7A").as_deref(),
            Some("609629065308")
        );
    }

    #[test]
    fn old_style_and_malformed_ids_do_not_decode() {
        assert_eq!(account_of_key_id("AKIAIOSFODNN7EXAMPLE"), None);
        assert_eq!(account_of_key_id("AKIA"), None);
        assert_eq!(account_of_key_id("akiarzpuzdikgb2valc4"), None);
        assert_eq!(account_of_key_id("AKIARZPUZDIKGB2VALC1"), None);
    }

    #[test]
    fn generated_ids_round_trip_for_odd_even_and_extreme_accounts() {
        for acct in [
            "123456789012",
            "609629065308",
            "000000000001",
            "999999999999",
            "100000000000",
        ] {
            for kind in [KeyKind::LongTerm, KeyKind::Temporary] {
                let id = new_access_key_id(kind, acct);
                assert_eq!(id.len(), 20, "{id}");
                assert_eq!(key_kind(&id), Some(kind));
                assert_eq!(account_of_key_id(&id).as_deref(), Some(acct), "{id}");
            }
            let uid = new_unique_id(USER_ID_PREFIX, acct);
            assert_eq!(uid.len(), 21);
            assert!(uid.starts_with("AIDA"));
        }
    }

    #[test]
    fn secrets_have_the_aws_shape_and_differ() {
        let a = new_secret_access_key();
        let b = new_secret_access_key();
        assert!(is_well_formed_secret(&a) && is_well_formed_secret(&b));
        assert_ne!(a, b);
        assert!(!is_well_formed_secret("short"));
    }

    #[test]
    fn account_ids() {
        let a = new_account_id();
        assert!(is_account_id(&a), "{a}");
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901a"));
    }

    #[test]
    fn every_symbol_is_drawn() {
        // Masked random bytes must reach the whole alphabet in every random position.
        let mut secret_symbols = std::collections::HashSet::new();
        let mut id_symbols = std::collections::HashSet::new();
        for _ in 0..2000 {
            secret_symbols.extend(new_secret_access_key().bytes());
            let id = new_access_key_id(KeyKind::LongTerm, "123456789012");
            assert_eq!(account_of_key_id(&id).as_deref(), Some("123456789012"));
            id_symbols.extend(id[13..].bytes());
        }
        assert_eq!(secret_symbols.len(), 64);
        assert_eq!(id_symbols.len(), 32);
    }
}
