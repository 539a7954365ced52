//! Secrets, signatures, SigV4 signing-key derivation and the bounded signing-key cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A secret access key. Zeroed when dropped, redacted in `Debug`, readable only through [`SecretKey::expose`].
#[derive(Clone)]
pub struct SecretKey(String);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SecretKey {
    /// Wraps a secret access key.
    pub fn new(secret: String) -> Self {
        SecretKey(secret)
    }

    /// The secret itself. Call only to sign or to derive a key; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn ct_eq(&self, other: &SecretKey) -> bool {
        ct_bytes_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A signature as text (SigV4: lowercase hex; SigV2: base64). It has no `==`: compare with
/// [`Signature::ct_eq`], which takes the same time wherever the first difference is.
#[derive(Clone, Debug)]
pub struct Signature(String);

impl Signature {
    /// Wraps a signature string.
    pub fn new(s: impl Into<String>) -> Self {
        Signature(s.into())
    }

    /// The signature as sent or computed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (the length is not secret and is compared first).
    pub fn ct_eq(&self, other: &Signature) -> bool {
        ct_bytes_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

/// Constant-time equality of two byte strings of public length: the differences are OR-ed together
/// without branching and only the final byte goes through `subtle` (one optimisation barrier instead
/// of one per byte, which cost 6% of a verify).
pub(crate) fn ct_bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    bool::from(diff.ct_eq(&0u8))
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A derived SigV4 signing key (`kSigning`). Zeroed on drop; never printed.
#[derive(Clone)]
pub(crate) struct SigningKey([u8; 32]);

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// kDate = HMAC("AWS4"+secret, date); kRegion; kService; kSigning = HMAC(kService, "aws4_request").
    pub(crate) fn derive(secret: &SecretKey, date: &str, region: &str, service: &str) -> Self {
        let mut k = zeroize::Zeroizing::new(Vec::with_capacity(4 + secret.0.len()));
        k.extend_from_slice(b"AWS4");
        k.extend_from_slice(secret.0.as_bytes());
        let mut k_date = hmac_sha256(&k, date.as_bytes());
        let mut k_region = hmac_sha256(&k_date, region.as_bytes());
        let mut k_service = hmac_sha256(&k_region, service.as_bytes());
        let key = hmac_sha256(&k_service, b"aws4_request");
        k_date.zeroize();
        k_region.zeroize();
        k_service.zeroize();
        SigningKey(key)
    }

    /// Hex HMAC of `data` under this key: the signature of a string to sign.
    pub(crate) fn sign(&self, data: &[u8]) -> String {
        crate::canonical::to_hex(&hmac_sha256(&self.0, data))
    }
}

/// Longest credential scope a [`SlottedSecret`] remembers (`date/region/service/aws4_request`;
/// real ones are 35-50 bytes: a region and a service of up to 20 characters each fit); a longer
/// one is derived each time.
const SLOT_SCOPE_MAX: usize = 64;

/// The signing key last derived for a scope.
// `repr(C)` with byte-sized fields only: the scope's length, the key, then the scope, so a hit (a
// short scope compared, the key copied) reads the first ~70 bytes and nothing else.
#[repr(C)]
struct Slot {
    len: u8,
    key: SigningKey,
    scope: [u8; SLOT_SCOPE_MAX],
}

/// A secret access key and the signing key last derived from it, kept together (in a verification
/// cache entry, say): a warm key then costs no lookup in a shared cache, and its signing key is
/// found next to the secret. One scope (date, region, service) is remembered; a request with
/// another scope derives its key and takes the slot. The secret never changes, so the slot cannot
/// hold a key of another secret.
#[repr(C)]
pub struct SlottedSecret {
    slot: Mutex<Option<Slot>>,
    secret: SecretKey,
}

impl fmt::Debug for SlottedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlottedSecret(<redacted>)")
    }
}

impl SlottedSecret {
    /// The secret, with an empty slot.
    pub fn new(secret: SecretKey) -> Self {
        SlottedSecret {
            secret,
            slot: Mutex::new(None),
        }
    }

    /// The secret itself.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The signing key of `scope` (whose parts are `date`, `region` and `service`).
    pub(crate) fn signing_key(
        &self,
        scope: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> SigningKey {
        let lock = || self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &*lock() {
            if s.scope.get(..usize::from(s.len)) == Some(scope.as_bytes()) {
                return s.key.clone();
            }
        }
        let key = SigningKey::derive(&self.secret, date, region, service);
        if scope.len() <= SLOT_SCOPE_MAX {
            let mut slot = Slot {
                scope: [0; SLOT_SCOPE_MAX],
                len: scope.len() as u8,
                key: key.clone(),
            };
            slot.scope[..scope.len()].copy_from_slice(scope.as_bytes());
            *lock() = Some(slot);
        }
        key
    }
}

struct Entry {
    secret: SecretKey,
    key: SigningKey,
}

#[derive(Default)]
struct Generations {
    current: HashMap<String, Entry>,
    previous: HashMap<String, Entry>,
    /// Reused buffer for the lookup key, so a hit allocates nothing.
    scratch: String,
}

/// Writes the map key of a scope into `out`: its parts separated by NUL.
fn cache_id(out: &mut String, access_key_id: &str, date: &str, region: &str, service: &str) {
    out.clear();
    for (i, part) in [access_key_id, date, region, service].iter().enumerate() {
        if i > 0 {
            out.push('\0');
        }
        out.push_str(part);
    }
}

/// A bounded, thread-safe cache of derived signing keys, keyed by (access key id, date, region, service).
///
/// A hit costs a map lookup and a constant-time comparison of the secret the entry was derived from
/// with the one passed in (so a changed secret never reuses a stale key), then two HMACs in the
/// verifier instead of six. Eviction is by generations: when the current generation holds half the
/// capacity it becomes the previous one and the older one is dropped (and zeroed); a hit in the
/// previous generation moves the entry back. At most `capacity` entries are held.
pub struct SigningKeyCache {
    half: usize,
    inner: Mutex<Generations>,
}

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("capacity", &(self.half * 2))
            .finish_non_exhaustive()
    }
}

impl SigningKeyCache {
    /// A cache holding at most `capacity` derived keys (at least 2).
    pub fn new(capacity: usize) -> Self {
        SigningKeyCache {
            half: (capacity / 2).max(1),
            inner: Mutex::new(Generations::default()),
        }
    }

    /// Number of keys held now.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A poisoned lock only means another thread panicked mid-insert; the maps stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing key for this scope, derived (and remembered) if absent or derived from another secret.
    pub(crate) fn get_or_derive(
        &self,
        access_key_id: &str,
        secret: &SecretKey,
        date: &str,
        region: &str,
        service: &str,
    ) -> SigningKey {
        let mut guard = self.lock();
        let g = &mut *guard;
        cache_id(&mut g.scratch, access_key_id, date, region, service);
        if let Some(e) = g.current.get(g.scratch.as_str()) {
            if e.secret.ct_eq(secret) {
                return e.key.clone();
            }
        } else if let Some(e) = g.previous.remove(g.scratch.as_str()) {
            if e.secret.ct_eq(secret) {
                let key = e.key.clone();
                let id = g.scratch.clone();
                self.insert(g, id, e);
                return key;
            }
        }
        let id = g.scratch.clone();
        drop(guard);
        let key = SigningKey::derive(secret, date, region, service);
        let entry = Entry {
            secret: secret.clone(),
            key: key.clone(),
        };
        let mut g = self.lock();
        self.insert(&mut g, id, entry);
        key
    }

    fn insert(&self, g: &mut Generations, id: String, entry: Entry) {
        if g.current.len() >= self.half && !g.current.contains_key(&id) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(id, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
        assert_eq!(format!("{s:?}"), "SecretKey(<redacted>)");
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let k = SigningKey::derive(&s, "20150830", "us-east-1", "iam");
        assert_eq!(format!("{k:?}"), "SigningKey(<redacted>)");
    }

    #[test]
    fn a_slotted_secret_keeps_the_key_of_its_last_scope() {
        let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into());
        let s = SlottedSecret::new(secret.clone());
        assert_eq!(format!("{s:?}"), "SlottedSecret(<redacted>)");
        let scope = |d: &str, r: &str, v: &str| format!("{d}/{r}/{v}/aws4_request");
        for (d, r, v) in [
            ("20120215", "us-east-1", "iam"),
            ("20120215", "us-east-1", "iam"),
            ("20120216", "us-east-1", "iam"),
            ("20120216", "eu-west-1", "sts"),
            ("20120215", "us-east-1", "iam"),
        ] {
            let want = SigningKey::derive(&secret, d, r, v);
            assert_eq!(s.signing_key(&scope(d, r, v), d, r, v).0, want.0);
            assert_eq!(
                s.signing_key(&scope(d, r, v), d, r, v).0,
                want.0,
                "from the slot"
            );
        }
        // A scope too long for the slot is derived each time, and leaves the slot as it was.
        let long = "x".repeat(SLOT_SCOPE_MAX);
        let want = SigningKey::derive(&secret, "20120215", &long, "iam");
        let long_scope = scope("20120215", &long, "iam");
        assert_eq!(
            s.signing_key(&long_scope, "20120215", &long, "iam").0,
            want.0
        );
        let last = scope("20120215", "us-east-1", "iam");
        let slot = s.slot.lock().unwrap();
        let held = slot.as_ref().unwrap();
        assert_eq!(&held.scope[..usize::from(held.len)], last.as_bytes());
    }

    #[test]
    fn derives_the_documented_key() {
        // AWS documentation example ("Examples of how to derive a signing key").
        let s = SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into());
        let k = SigningKey::derive(&s, "20120215", "us-east-1", "iam");
        assert_eq!(
            crate::canonical::to_hex(&k.0),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SigningKeyCache>();
        check::<SecretKey>();
        check::<crate::Verified>();
        check::<crate::ChunkDecoder>();
        check::<crate::SignedRequest>();
    }

    #[test]
    fn ct_bytes_eq_compares_everything() {
        assert!(ct_bytes_eq(b"", b""));
        assert!(ct_bytes_eq(b"abc", b"abc"));
        assert!(!ct_bytes_eq(b"abc", b"abd"));
        assert!(!ct_bytes_eq(b"xbc", b"abc"));
        assert!(!ct_bytes_eq(b"abc", b"abcd"));
    }

    #[test]
    fn signature_ct_eq() {
        assert!(Signature::new("abc").ct_eq(&Signature::new("abc")));
        assert!(!Signature::new("abc").ct_eq(&Signature::new("abd")));
        assert!(!Signature::new("abc").ct_eq(&Signature::new("ab")));
    }

    #[test]
    fn cache_is_bounded_and_checks_the_secret() {
        let cache = SigningKeyCache::new(4);
        let s1 = SecretKey::new("one".into());
        let s2 = SecretKey::new("two".into());
        let a = cache.get_or_derive("AK", &s1, "20240101", "us-east-1", "sts");
        let b = cache.get_or_derive("AK", &s1, "20240101", "us-east-1", "sts");
        assert_eq!(a.0, b.0);
        let c = cache.get_or_derive("AK", &s2, "20240101", "us-east-1", "sts");
        assert_ne!(a.0, c.0);
        assert_eq!(
            c.0,
            SigningKey::derive(&s2, "20240101", "us-east-1", "sts").0
        );
        for i in 0..100 {
            cache.get_or_derive(&format!("K{i}"), &s1, "20240101", "us-east-1", "sts");
            assert!(cache.len() <= 4);
        }
        assert!(!cache.is_empty());
    }
}
