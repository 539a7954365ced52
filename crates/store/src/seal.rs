//! The master key and authenticated encryption of secrets at rest.
//!
//! Key file format: 64 hexadecimal characters (the 32 key bytes), optionally followed by a newline.
//! The file must be readable by its owner only (mode `0600` or stricter); the store refuses it
//! otherwise.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::StoreError;

/// Length of a master key and of every key derived from it.
pub const KEY_LEN: usize = 32;
/// HKDF salt: fixes the derivation to this application and version.
const HKDF_SALT: &[u8] = b"keyward master key v1";
/// First byte of every sealed value: the format version.
const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The store's root secret: 32 random bytes from which every sealing key is derived.
///
/// Zeroed on drop; `Debug` prints no key material.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A master key from its 32 bytes (for tests, or a key taken from a secret manager).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A new random master key from the operating system's CSPRNG.
    pub fn generate() -> MasterKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        MasterKey(key)
    }

    /// Reads the key file at `path`, or creates it with a new random key if it does not exist.
    ///
    /// A new file is created with mode `0600` from the start (never widened then narrowed) and
    /// appears atomically with its full content, so two processes starting together agree on one key.
    /// An existing file that its group or others may read or write is refused with
    /// [`StoreError::InsecureKeyFile`].
    pub fn load_or_create(path: &Path) -> Result<MasterKey, StoreError> {
        match MasterKey::load(path) {
            Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        let key = MasterKey::generate();
        let mut text = Zeroizing::new(hex::encode(key.0.as_ref()));
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| StoreError::BadKeyFile {
            path: path.to_path_buf(),
            reason: "the path names no file".into(),
        })?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{:016x}",
            file_name.to_string_lossy(),
            std::process::id(),
            OsRng.next_u64()
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(&tmp, e));
        }
        // A hard link fails if `path` exists: whoever links first wins, the others read its key.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = File::open(&dir) {
                    let _ = d.sync_all();
                }
                Ok(key)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => MasterKey::load(path),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Reads an existing key file (see the module docs for its format and permissions).
    pub fn load(path: &Path) -> Result<MasterKey, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
        if !meta.is_file() {
            return Err(StoreError::BadKeyFile {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::InsecureKeyFile {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(1024)
            .read_to_string(&mut text)
            .map_err(|e| StoreError::io(path, e))?;
        let hex_text = text.trim_end_matches(['\n', '\r']);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if hex_text.len() != 2 * KEY_LEN || hex::decode_to_slice(hex_text, key.as_mut()).is_err() {
            return Err(StoreError::BadKeyFile {
                path: path.to_path_buf(),
                reason: format!("expected {} hexadecimal characters", 2 * KEY_LEN),
            });
        }
        Ok(MasterKey(key))
    }

    /// A 32-byte subkey for one `purpose` (HKDF-SHA256 with `purpose` as info): distinct purposes
    /// give independent keys, so session tokens and stored secrets never share a key.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(purpose.as_bytes(), out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// A [`Sealer`] under the subkey for `purpose`.
    pub fn sealer(&self, purpose: &str) -> Sealer {
        Sealer::new(&self.derive(purpose))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Authenticated encryption (XChaCha20-Poly1305) under one key.
///
/// A sealed value is `version (1 byte) || nonce (24 random bytes) || ciphertext || tag (16 bytes)`.
/// The associated data is not stored: the caller passes it again to [`Sealer::open`], which fails if
/// it differs, so a value sealed for one row or purpose cannot be replayed in another.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer under a 32-byte key (usually from [`MasterKey::derive`]).
    pub fn new(key: &[u8; KEY_LEN]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new_from_slice(key).expect("the key is 32 bytes"),
        }
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Checks and decrypts a value from [`Sealer::seal`] with the same `aad`.
    ///
    /// Fails with [`StoreError::Corrupt`] if the value was sealed under another key or other
    /// associated data, or was altered.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEAL_VERSION {
            return Err(StoreError::Corrupt(
                "sealed value has an unknown format".into(),
            ));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("24 bytes");
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                StoreError::Corrupt(
                    "sealed value does not open: another master key, or the row was altered".into(),
                )
            })
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_round_trip_and_aad_binding() {
        let s = MasterKey::generate().sealer("test");
        let sealed = s.seal(b"hello", b"AKIAEXAMPLE");
        assert_eq!(&s.open(&sealed, b"AKIAEXAMPLE").unwrap()[..], b"hello");
        assert!(matches!(
            s.open(&sealed, b"AKIAOTHER"),
            Err(StoreError::Corrupt(_))
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open(&tampered, b"AKIAEXAMPLE").is_err());
        assert!(s.open(&sealed[..10], b"AKIAEXAMPLE").is_err());
        // Fresh nonce every time.
        assert_ne!(sealed, s.seal(b"hello", b"AKIAEXAMPLE"));
    }

    #[test]
    fn purposes_give_independent_keys() {
        let m = MasterKey::from_bytes([7; 32]);
        assert_ne!(*m.derive("a"), *m.derive("b"));
        assert_eq!(*m.derive("a"), *MasterKey::from_bytes([7; 32]).derive("a"));
        let sealed = m.sealer("a").seal(b"x", b"");
        assert!(m.sealer("b").open(&sealed, b"").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let m = MasterKey::from_bytes([0xAB; 32]);
        let shown = format!("{m:?} {:?}", m.sealer("p"));
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
    }

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(*k1.derive("x"), *k2.derive("x"));
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim_end().len(), 64);
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn group_or_world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::load_or_create(&path).unwrap_err();
            match &err {
                StoreError::InsecureKeyFile { path: p, mode: m } => {
                    assert_eq!(p, &path);
                    assert_eq!(*m, mode);
                }
                other => panic!("{other:?}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains("master.key") && msg.contains(&format!("{mode:04o}")),
                "{msg}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::load(&path).unwrap();
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"not hex")
            .unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(StoreError::BadKeyFile { .. })
        ));
    }

    #[test]
    fn concurrent_creation_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let keys: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap()))
                .collect();
            hs.into_iter()
                .map(|h| *h.join().unwrap().derive("x"))
                .collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }
}
