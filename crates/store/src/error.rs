//! The one error type of the store.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything a store operation can fail with.
///
/// The first five variants are IAM errors that the server returns to the client as they are: their
/// message is the text AWS uses (see [`StoreError::code`] for the matching IAM error code). The others
/// are the server's own trouble and should be logged, not shown to a client.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The named entity does not exist, e.g. "The user with name bob cannot be found."
    NoSuchEntity(String),
    /// The entity to create already exists, e.g. "User with name bob already exists."
    EntityAlreadyExists(String),
    /// A quota would be exceeded, e.g. "Cannot exceed quota for AccessKeysPerUser: 2".
    LimitExceeded(String),
    /// The entity still has dependents, e.g. "Cannot delete entity, must delete access keys first."
    DeleteConflict(String),
    /// An argument does not satisfy the IAM constraints (name pattern, length, marker...).
    InvalidInput(String),
    /// The database cannot be used right now (busy past the timeout, closed store, failed task).
    Unavailable(String),
    /// Stored data cannot be read back: a secret that does not open under the master key, a row that
    /// breaks the schema's invariants, a corrupt database file.
    Corrupt(String),
    /// The database was written by a newer keyward whose schema this one does not know.
    IncompatibleSchema {
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// A secret file (the master key) may be read by its group or by others.
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits (e.g. `0o644`).
        mode: u32,
    },
    /// A secret file (the master key) exists but does not hold a key.
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system operation failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl StoreError {
    /// The IAM error code for this error: `NoSuchEntity`, `EntityAlreadyExists`, `LimitExceeded`,
    /// `DeleteConflict`, `ValidationError` for invalid input, and `ServiceFailure` for everything that is
    /// the server's fault.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NoSuchEntity(_) => "NoSuchEntity",
            StoreError::EntityAlreadyExists(_) => "EntityAlreadyExists",
            StoreError::LimitExceeded(_) => "LimitExceeded",
            StoreError::DeleteConflict(_) => "DeleteConflict",
            StoreError::InvalidInput(_) => "ValidationError",
            _ => "ServiceFailure",
        }
    }

    pub(crate) fn no_such_user(name: &str) -> StoreError {
        StoreError::NoSuchEntity(format!("The user with name {name} cannot be found."))
    }

    pub(crate) fn no_such_key(key_id: &str) -> StoreError {
        StoreError::NoSuchEntity(format!("The Access Key with id {key_id} cannot be found."))
    }

    pub(crate) fn no_such_account(account_id: &str) -> StoreError {
        StoreError::NoSuchEntity(format!("The account with id {account_id} cannot be found."))
    }

    pub(crate) fn user_exists(name: &str) -> StoreError {
        StoreError::EntityAlreadyExists(format!("User with name {name} already exists."))
    }

    pub(crate) fn too_many_keys(max: usize) -> StoreError {
        StoreError::LimitExceeded(format!("Cannot exceed quota for AccessKeysPerUser: {max}"))
    }

    pub(crate) fn too_many_tags(max: usize) -> StoreError {
        StoreError::LimitExceeded(format!("Cannot exceed quota for TagsPerUser: {max}"))
    }

    pub(crate) fn user_has_keys() -> StoreError {
        StoreError::DeleteConflict("Cannot delete entity, must delete access keys first.".into())
    }

    pub(crate) fn closed() -> StoreError {
        StoreError::Unavailable("the store is closed".into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoSuchEntity(m)
            | StoreError::EntityAlreadyExists(m)
            | StoreError::LimitExceeded(m)
            | StoreError::DeleteConflict(m)
            | StoreError::InvalidInput(m) => f.write_str(m),
            StoreError::Unavailable(m) => write!(f, "identity store unavailable: {m}"),
            StoreError::Corrupt(m) => write!(f, "identity store data is corrupt: {m}"),
            StoreError::IncompatibleSchema { found, supported } => write!(
                f,
                "the database has schema version {found}, newer than the {supported} this keyward \
                 supports; upgrade keyward"
            ),
            StoreError::InsecureKeyFile { path, mode } => write!(
                f,
                "refusing to use key file {}: its mode is {mode:04o}, readable or writable by group \
                 or others; run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            StoreError::BadKeyFile { path, reason } => {
                write!(f, "key file {} is not usable: {reason}", path.display())
            }
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
