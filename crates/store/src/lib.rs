//! keyward's identity store: accounts, IAM users and their tags, long-term access keys (their
//! secrets sealed at rest), account aliases and last-used data.
//!
//! [`Store`] is the one public handle: cheap to clone, `Send + Sync`, with an `async` API whose
//! errors are typed ([`StoreError`]). Behind it sits a private engine trait with two engines: the
//! embedded SQLite one ([`Store::open_sqlite`]) and PostgreSQL ([`Store::open_postgres`]), which
//! several `keyward serve` nodes can share; [`Store::open`] picks one from a database URL. The
//! engines store and enforce atomic invariants, while sealing, validation, pagination markers and
//! last-used coalescing live here, once.
//!
//! Secrets never reach an engine in clear: each is sealed with XChaCha20-Poly1305 under a key
//! derived from the [`MasterKey`] for that purpose, with the access key id as associated data.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyward_store::StoreError> {
//! use keyward_store::{MasterKey, Store};
//! let master = MasterKey::load_or_create("/var/lib/keyward/master.key".as_ref())?;
//! let store = Store::open_sqlite("/var/lib/keyward/keyward.db".as_ref(), master).await?;
//! let account = store.create_account("acme", None).await?;
//! let (key, secret) = store.create_access_key(&account.id, None).await?;
//! # let _ = (key, secret.expose());
//! store.close().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod backend;
mod error;
mod events;
mod held;
mod model;
mod postgres;
mod seal;
mod sqlite;
mod usage;
mod validate;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use keyward_ids::{KeyKind, USER_ID_PREFIX};
use tokio::sync::{broadcast, watch};

use crate::backend::{Backend, NewKey, NewUser};
use crate::model::to_millis;

pub use crate::error::StoreError;
pub use crate::events::{
    event_id_time, new_event_id, AuditRecord, EventBatch, EventFilter, EventId, EventPage,
    EventQuery, EventRef, IdentityType, UuidText, EVENT_TOKEN_PURPOSE, MAX_EVENTS_PER_PAGE,
};
pub use crate::held::{holding_commits, HeldCommit};
pub use crate::model::{AccessKey, Account, KeyStatus, LastUsed, Page, Secret, Tag, User};
pub use crate::seal::{MasterKey, Sealer, KEY_LEN};

/// Most access keys (active or not) a user, or an account's root, may have.
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
/// Most tags a user may have.
pub const MAX_TAGS_PER_USER: usize = validate::MAX_TAGS_PER_USER;
/// Largest page `list_users` returns (IAM's `MaxItems` bound).
pub const MAX_ITEMS: usize = 1000;
/// Access key ids drawn per user by [`Store::create_users_with_keys`], tried in order.
const KEY_ID_CANDIDATES: usize = 3;
/// How often pending last-used data is written by default.
pub const DEFAULT_USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// The [`MasterKey::derive`] purpose of the key that seals secret access keys. Use other purposes
/// for anything else (e.g. session tokens).
pub const SECRETS_PURPOSE: &str = "keyward/store/secret-access-keys/v1";

/// How long a PostgreSQL connection attempt may take before the call fails `Unavailable`.
pub const POSTGRES_CONNECT_TIMEOUT: Duration = postgres::CONNECT_TIMEOUT;
/// How long one PostgreSQL statement may run (lock waits included) before it is cancelled.
pub const POSTGRES_STATEMENT_TIMEOUT: Duration = postgres::STATEMENT_TIMEOUT;
/// The most a PostgreSQL-backed call may take in all (waiting for a pooled connection included)
/// before it fails `Unavailable`.
pub const POSTGRES_CALL_TIMEOUT: Duration = postgres::CALL_TIMEOUT;

/// A committed change that caches of users and keys should act on, announced by any node sharing
/// a PostgreSQL database (see [`Store::subscribe_changes`]).
///
/// On the wire it is the payload of `NOTIFY keyward_changes`, sent right after the writing
/// transaction commits (so only committed changes are seen): `key:<access key id>` or
/// `user:<account id>:<user name>`, under 100 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// An access key was activated, deactivated or deleted. A new key is not announced: caches
    /// hold only keys they have read.
    AccessKey(String),
    /// A user was created, renamed, moved, tagged, untagged or deleted; `name` is its name before
    /// the change, as stored (compare ignoring ASCII case).
    User {
        /// The user's account.
        account_id: String,
        /// The user's name before the change.
        name: String,
    },
    /// Changes may have been missed (the listening connection was (re)established, or an unknown
    /// payload arrived): drop every cached entry. Always the first message once listening.
    Resync,
}

impl Change {
    /// The `NOTIFY` payload.
    pub(crate) fn payload(&self) -> String {
        match self {
            Change::AccessKey(id) => format!("key:{id}"),
            Change::User { account_id, name } => format!("user:{account_id}:{name}"),
            Change::Resync => "resync".to_owned(),
        }
    }

    /// Reads a `NOTIFY` payload; anything unknown is a [`Change::Resync`].
    pub(crate) fn from_payload(payload: &str) -> Change {
        if let Some(id) = payload.strip_prefix("key:") {
            return Change::AccessKey(id.to_owned());
        }
        if let Some((account_id, name)) = payload
            .strip_prefix("user:")
            .and_then(|rest| rest.split_once(':'))
        {
            return Change::User {
                account_id: account_id.to_owned(),
                name: name.to_owned(),
            };
        }
        Change::Resync
    }
}

/// `url` with its password replaced by `***` (in the user-info part and in a `password=`
/// parameter), for logs and error messages.
pub fn mask_database_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => userinfo.to_owned(),
                };
                format!("{scheme}://{user}{}", &rest[at..])
            }
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Options for opening a store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Interval of the background task that writes pending last-used data; `None` starts no task
    /// (then call [`Store::flush_key_usage`] yourself).
    pub usage_flush_interval: Option<Duration>,
    /// SQLite only: the most page cache the write connection may hold, in MiB (`None`: SQLite's
    /// default, about 2 MiB). A bulk load into a large store wants a large one: dirty pages are
    /// then written once per transaction instead of spilling.
    pub sqlite_write_cache_mib: Option<u32>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            usage_flush_interval: Some(DEFAULT_USAGE_FLUSH_INTERVAL),
            sqlite_write_cache_mib: None,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::usage_flush_interval`].
    pub fn usage_flush_interval(mut self, every: Option<Duration>) -> StoreOptions {
        self.usage_flush_interval = every;
        self
    }

    /// Sets [`StoreOptions::sqlite_write_cache_mib`].
    pub fn sqlite_write_cache_mib(mut self, mib: Option<u32>) -> StoreOptions {
        self.sqlite_write_cache_mib = mib;
        self
    }
}

/// The IAM user that owns an access key, as the key lookup returns it (its name is
/// [`AccessKey::user_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    /// The user's stable id (`AIDA...`).
    pub user_id: String,
    /// The user's IAM path.
    pub path: String,
}

/// A handle on the identity store. Clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    secrets: Sealer,
    /// Seals LookupEvents page tokens.
    event_tokens: Sealer,
    /// Last uses not yet written, one per key (the latest).
    pending_usage: Mutex<usage::PendingUsage>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    /// Generation of the current background flush task; an older task stops at its next tick.
    flusher: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the SQLite database at `db_path`, creating it (mode 0600) if needed and applying
    /// pending schema migrations, and starts the background last-used flush (every
    /// [`DEFAULT_USAGE_FLUSH_INTERVAL`]). Must be called within a tokio runtime.
    pub async fn open_sqlite(db_path: &Path, master: MasterKey) -> Result<Store, StoreError> {
        Store::open_sqlite_with(db_path, master, StoreOptions::default()).await
    }

    /// [`Store::open_sqlite`] with options.
    pub async fn open_sqlite_with(
        db_path: &Path,
        master: MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let backend = sqlite::SqliteBackend::open(db_path, options.sqlite_write_cache_mib).await?;
        let store = Store::with_backend(Box::new(backend), &master);
        if let Some(every) = options.usage_flush_interval {
            store.spawn_background_flush(every);
        }
        Ok(store)
    }

    /// Opens the store a database URL names: `sqlite:PATH` (also `sqlite://PATH`) or
    /// `postgres://user:password@host:port/db` / `postgresql://...` (see [`Store::open_postgres`]).
    /// Another scheme is `InvalidInput`; every error names the URL with its password masked.
    pub async fn open(url: &str, master: MasterKey) -> Result<Store, StoreError> {
        Store::open_with(url, master, StoreOptions::default()).await
    }

    /// [`Store::open`] with options.
    pub async fn open_with(
        url: &str,
        master: MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Store::open_postgres_with(url, master, options).await;
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "database URL {url}: no file path after sqlite:"
                )));
            }
            return Store::open_sqlite_with(Path::new(path), master, options).await;
        }
        Err(StoreError::InvalidInput(format!(
            "unsupported database URL {}: expected sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
            mask_database_url(url)
        )))
    }

    /// Connects to PostgreSQL (`postgres://` or `postgresql://` URL, as libpq reads it: a unix
    /// socket as `host=/run/postgresql` or a percent-encoded host, `sslmode` — `disable`,
    /// `prefer` (the default), `require`, `verify-ca`, `verify-full` — with `sslrootcert`,
    /// `connect_timeout`, `options`...), applies pending migrations (one node at a time when
    /// several start together) and starts the background last-used flush. An unreachable server
    /// or a refused login fails `Unavailable` within [`POSTGRES_CONNECT_TIMEOUT`] and the error
    /// names the URL with its password masked. Must be called within a tokio runtime.
    pub async fn open_postgres(url: &str, master: MasterKey) -> Result<Store, StoreError> {
        Store::open_postgres_with(url, master, StoreOptions::default()).await
    }

    /// [`Store::open_postgres`] with options.
    pub async fn open_postgres_with(
        url: &str,
        master: MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let backend = postgres::PgBackend::open(url).await?;
        let store = Store::with_backend(Box::new(backend), &master);
        if let Some(every) = options.usage_flush_interval {
            store.spawn_background_flush(every);
        }
        Ok(store)
    }

    fn with_backend(backend: Box<dyn Backend>, master: &MasterKey) -> Store {
        Store {
            inner: Arc::new(Inner {
                backend,
                secrets: master.sealer(SECRETS_PURPOSE),
                event_tokens: master.sealer(EVENT_TOKEN_PURPOSE),
                pending_usage: Mutex::new(usage::PendingUsage::default()),
                closed: AtomicBool::new(false),
                stop: watch::channel(false).0,
                flusher: AtomicU64::new(0),
            }),
        }
    }

    fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    // ----- accounts -----

    /// Creates an account with a random 12-digit id, or `account_id` if given.
    ///
    /// `EntityAlreadyExists` if the id or the name is taken.
    pub async fn create_account(
        &self,
        name: &str,
        account_id: Option<&str>,
    ) -> Result<Account, StoreError> {
        validate::account_name(name)?;
        let now = to_millis(SystemTime::now());
        match account_id {
            Some(id) => {
                validate::account_id(id)?;
                self.backend().create_account(id, name, now).await
            }
            None => {
                // A random id may collide with an existing one: draw again a few times.
                let mut attempts = 0;
                loop {
                    let id = keyward_ids::new_account_id();
                    match self.backend().create_account(&id, name, now).await {
                        Err(StoreError::EntityAlreadyExists(m))
                            if m.contains(&id) && attempts < 5 =>
                        {
                            attempts += 1;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// The account with this id, if any.
    pub async fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        self.backend().get_account(account_id).await
    }

    /// The account with this name (exact match), if any.
    pub async fn get_account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        self.backend().get_account_by_name(name).await
    }

    /// All accounts, sorted by id.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.backend().list_accounts().await
    }

    // ----- users -----

    /// Creates an IAM user with a new `AIDA...` id.
    ///
    /// `NoSuchEntity` for an unknown account, `EntityAlreadyExists` if a user of that name exists
    /// in the account ignoring ASCII case, `LimitExceeded` for more than 50 tags.
    pub async fn create_user(
        &self,
        account_id: &str,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> Result<User, StoreError> {
        validate::user_name(name)?;
        validate::path(path)?;
        validate::tags(tags)?;
        if tags.len() > MAX_TAGS_PER_USER {
            return Err(StoreError::too_many_tags(MAX_TAGS_PER_USER));
        }
        if !keyward_ids::is_account_id(account_id) {
            return Err(StoreError::no_such_account(account_id));
        }
        let user = NewUser {
            account_id: account_id.to_owned(),
            name: name.to_owned(),
            user_id: keyward_ids::new_unique_id(USER_ID_PREFIX, account_id),
            path: path.to_owned(),
            created_ms: to_millis(SystemTime::now()),
            tags: tags.to_vec(),
        };
        self.backend().create_user(user).await
    }

    /// Bulk loading: creates the users `names` (path `/`, no tags) in `account_id` with one new
    /// access key each, with the checks of [`Store::create_user`] and
    /// [`Store::create_access_key`] and the same sealing, in one transaction where the engine can
    /// (SQLite: all or nothing; PostgreSQL: one call per user and key). Returns each user with
    /// its key and secret, in order.
    pub async fn create_users_with_keys(
        &self,
        account_id: &str,
        names: &[String],
    ) -> Result<Vec<(User, AccessKey, Secret)>, StoreError> {
        if !keyward_ids::is_account_id(account_id) {
            return Err(StoreError::no_such_account(account_id));
        }
        let mut batch = Vec::with_capacity(names.len());
        let mut secrets = Vec::with_capacity(names.len());
        for name in names {
            validate::user_name(name)?;
            let now = to_millis(SystemTime::now());
            let user = NewUser {
                account_id: account_id.to_owned(),
                name: name.clone(),
                user_id: keyward_ids::new_unique_id(USER_ID_PREFIX, account_id),
                path: "/".to_owned(),
                created_ms: now,
                tags: Vec::new(),
            };
            let secret = Secret::new(keyward_ids::new_secret_access_key());
            // Candidate ids, tried in order where one is taken (see create_access_key).
            let keys = (0..KEY_ID_CANDIDATES)
                .map(|_| {
                    let key_id = keyward_ids::new_access_key_id(KeyKind::LongTerm, account_id);
                    self.new_key(account_id, Some(name), key_id, &secret)
                })
                .collect();
            batch.push((user, keys));
            secrets.push(secret);
        }
        let made = self
            .backend()
            .create_users_with_keys(batch, MAX_ACCESS_KEYS_PER_USER)
            .await?;
        Ok(made
            .into_iter()
            .zip(secrets)
            .map(|((user, key), secret)| (user, key, secret))
            .collect())
    }

    /// The user with this name in the account, matched ignoring ASCII case.
    pub async fn get_user(&self, account_id: &str, name: &str) -> Result<Option<User>, StoreError> {
        if let Err(e) = validate::existing_user_name(name) {
            return match e {
                StoreError::NoSuchEntity(_) => Ok(None),
                e => Err(e),
            };
        }
        self.backend().get_user(account_id, name).await
    }

    /// The user with this unique id (`AIDA` + 17) in the account, whatever it is named now: the
    /// principal that session credentials belong to. `None` for an id no user has (a deleted
    /// user's, even if a new user took its name).
    pub async fn get_user_by_id(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Option<User>, StoreError> {
        self.backend().get_user_by_id(account_id, user_id).await
    }

    /// One page of the account's users whose path starts with `path_prefix` (`""` or `"/"` for
    /// all), sorted by name ignoring case, starting after `marker` (from a previous page's
    /// `next_marker`), at most `max_items` (1 to [`MAX_ITEMS`]).
    pub async fn list_users(
        &self,
        account_id: &str,
        path_prefix: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<User>, StoreError> {
        validate::path_prefix(path_prefix)?;
        let after = page_start(marker, max_items)?;
        // The backend starts after the marker and reads one more than a page: whether any are
        // left.
        let items = self
            .backend()
            .list_users(account_id, path_prefix, after.as_deref(), max_items + 1)
            .await?;
        Ok(page_of(items, |u| validate::fold(&u.name), None, max_items))
    }

    /// Renames and/or moves a user; its id, tags and access keys follow.
    ///
    /// `NoSuchEntity` for an unknown user, `EntityAlreadyExists` if the new name is another user's
    /// (ignoring case; changing only the case of a name is allowed).
    pub async fn update_user(
        &self,
        account_id: &str,
        name: &str,
        new_name: Option<&str>,
        new_path: Option<&str>,
    ) -> Result<User, StoreError> {
        validate::existing_user_name(name)?;
        if let Some(n) = new_name {
            validate::user_name(n)?;
        }
        if let Some(p) = new_path {
            validate::path(p)?;
        }
        self.backend()
            .update_user(account_id, name, new_name, new_path)
            .await
    }

    /// Deletes a user and its tags. `DeleteConflict` while it has access keys.
    pub async fn delete_user(&self, account_id: &str, name: &str) -> Result<(), StoreError> {
        validate::existing_user_name(name)?;
        self.backend().delete_user(account_id, name).await
    }

    /// Adds tags to a user; a tag whose key exists (ignoring case) replaces it.
    /// `LimitExceeded` if the user would have more than [`MAX_TAGS_PER_USER`].
    pub async fn tag_user(
        &self,
        account_id: &str,
        name: &str,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        validate::existing_user_name(name)?;
        validate::tags(tags)?;
        self.backend()
            .tag_user(account_id, name, tags, MAX_TAGS_PER_USER)
            .await
    }

    /// Removes the tags with these keys (ignoring case); keys the user does not have are ignored.
    pub async fn untag_user(
        &self,
        account_id: &str,
        name: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        validate::existing_user_name(name)?;
        for k in keys {
            validate::tag_key(k)?;
        }
        self.backend().untag_user(account_id, name, keys).await
    }

    /// One page of the user's tags, sorted by key ignoring case, starting after `marker` (from
    /// a previous page's `next_marker`), at most `max_items` (1 to [`MAX_ITEMS`]).
    /// `NoSuchEntity` for an unknown user.
    pub async fn list_user_tags_page(
        &self,
        account_id: &str,
        name: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<Tag>, StoreError> {
        let after = page_start(marker, max_items)?;
        let tags = self.list_user_tags(account_id, name).await?;
        Ok(page_of(tags, |t| validate::fold(&t.key), after, max_items))
    }

    /// The user's tags, sorted by key. `NoSuchEntity` for an unknown user.
    pub async fn list_user_tags(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Vec<Tag>, StoreError> {
        self.get_user(account_id, name)
            .await?
            .map(|u| u.tags)
            .ok_or_else(|| StoreError::no_such_user(name))
    }

    // ----- access keys -----

    /// Creates an active access key for a user (`user_name`) or the account's root (`None`), with
    /// a new random secret, which is returned here and only here (and by [`Store::get_access_key`]
    /// for authentication).
    ///
    /// `NoSuchEntity` for an unknown account or user, `LimitExceeded` if the owner already has
    /// [`MAX_ACCESS_KEYS_PER_USER`] keys (inactive ones count).
    pub async fn create_access_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
    ) -> Result<(AccessKey, Secret), StoreError> {
        if let Some(n) = user_name {
            validate::existing_user_name(n)?;
        }
        if !keyward_ids::is_account_id(account_id) {
            return Err(StoreError::no_such_account(account_id));
        }
        let secret = Secret::new(keyward_ids::new_secret_access_key());
        // An id has 39 random bits per account: among a million keys of one account a new id is
        // already taken about once in half a million draws. Draw again, as for account ids.
        let mut attempts = 0;
        loop {
            let key_id = keyward_ids::new_access_key_id(KeyKind::LongTerm, account_id);
            match self
                .insert_key(account_id, user_name, key_id.clone(), &secret)
                .await
            {
                Err(StoreError::EntityAlreadyExists(m)) if m.contains(&key_id) && attempts < 5 => {
                    attempts += 1;
                }
                other => return other.map(|key| (key, secret)),
            }
        }
    }

    /// Creates an active access key with a given id and secret (bootstrap credentials from the
    /// environment). Same errors as [`Store::create_access_key`], plus `EntityAlreadyExists` if
    /// the id exists and `InvalidInput` for an id that is not `AKIA` + 16 base32 characters.
    pub async fn create_access_key_with(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
        secret: &str,
    ) -> Result<AccessKey, StoreError> {
        if let Some(n) = user_name {
            validate::existing_user_name(n)?;
        }
        validate::long_term_key_id(key_id)?;
        validate::secret(secret)?;
        let secret = Secret::new(secret.to_owned());
        self.insert_key(account_id, user_name, key_id.to_owned(), &secret)
            .await
    }

    async fn insert_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: String,
        secret: &Secret,
    ) -> Result<AccessKey, StoreError> {
        let key = self.new_key(account_id, user_name, key_id, secret);
        self.backend()
            .insert_access_key(key, MAX_ACCESS_KEYS_PER_USER)
            .await
    }

    /// A key record to insert, its secret sealed (the key id is the associated data).
    fn new_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: String,
        secret: &Secret,
    ) -> NewKey {
        let sealed_secret = self
            .inner
            .secrets
            .seal(secret.expose().as_bytes(), key_id.as_bytes());
        NewKey {
            key_id,
            account_id: account_id.to_owned(),
            user_name: user_name.map(str::to_owned),
            sealed_secret,
            created_ms: to_millis(SystemTime::now()),
        }
    }

    /// The key and its secret, whatever its status: the authentication lookup. `None` for an
    /// unknown id; `Corrupt` if the stored secret does not open under this master key.
    pub async fn get_access_key(
        &self,
        key_id: &str,
    ) -> Result<Option<(AccessKey, Secret)>, StoreError> {
        Ok(self
            .get_access_key_with_owner(key_id)
            .await?
            .map(|(key, secret, _)| (key, secret)))
    }

    /// [`Store::get_access_key`] with the owning user's id and path (`None` for the root), read
    /// in the same statement: what authentication needs, in one store round trip.
    pub async fn get_access_key_with_owner(
        &self,
        key_id: &str,
    ) -> Result<Option<(AccessKey, Secret, Option<KeyOwner>)>, StoreError> {
        match self.backend().get_access_key(key_id).await? {
            Some(rec) => self.open_key(rec).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::get_access_key_with_owner`] for many keys in one store round trip: those of
    /// `key_ids` that exist, in any order.
    pub async fn get_access_keys_with_owner(
        &self,
        key_ids: &[String],
    ) -> Result<Vec<(AccessKey, Secret, Option<KeyOwner>)>, StoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.backend()
            .get_access_keys(key_ids)
            .await?
            .into_iter()
            .map(|rec| self.open_key(rec))
            .collect()
    }

    /// A stored key with its secret unsealed.
    fn open_key(
        &self,
        rec: backend::KeyRecord,
    ) -> Result<(AccessKey, Secret, Option<KeyOwner>), StoreError> {
        let key_id = rec.key.key_id.as_str();
        let clear = self
            .inner
            .secrets
            .open(&rec.sealed_secret, key_id.as_bytes())
            .map_err(|_| {
                StoreError::Corrupt(format!(
                "the secret of access key {key_id} does not open: another master key, or the row \
                 was altered"
            ))
            })?;
        let secret = String::from_utf8(clear.to_vec()).map_err(|_| {
            StoreError::Corrupt(format!("the secret of access key {key_id} is not UTF-8"))
        })?;
        Ok((rec.key, Secret::new(secret), rec.owner))
    }

    /// One page of [`Store::list_access_keys`]: starting after `marker` (from a previous page's
    /// `next_marker`), at most `max_items` (1 to [`MAX_ITEMS`]).
    pub async fn list_access_keys_page(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<AccessKey>, StoreError> {
        let after = page_start(marker, max_items)?;
        let keys = self.list_access_keys(account_id, user_name).await?;
        // The order the backends list keys in: creation time, then key id.
        let place = |k: &AccessKey| format!("{:016x}{}", to_millis(k.created), k.key_id);
        Ok(page_of(keys, place, after, max_items))
    }

    /// The keys of a user (`user_name`) or of the account's root (`None`), oldest first.
    /// `NoSuchEntity` for an unknown user or account.
    pub async fn list_access_keys(
        &self,
        account_id: &str,
        user_name: Option<&str>,
    ) -> Result<Vec<AccessKey>, StoreError> {
        self.backend().list_access_keys(account_id, user_name).await
    }

    /// Activates or deactivates a key. `NoSuchEntity` unless the key belongs to that owner.
    pub async fn update_access_key_status(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
        status: KeyStatus,
    ) -> Result<(), StoreError> {
        self.backend()
            .update_access_key_status(account_id, user_name, key_id, status)
            .await
    }

    /// Deletes a key. `NoSuchEntity` unless the key belongs to that owner.
    pub async fn delete_access_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
    ) -> Result<(), StoreError> {
        self.backend()
            .delete_access_key(account_id, user_name, key_id)
            .await?;
        self.lock_usage().remove(key_id);
        Ok(())
    }

    /// Notes a use of a key, in memory only: per key the latest use is kept until the next flush
    /// ([`Store::flush_key_usage`], the background task, or [`Store::close`]). Cheap; call it on
    /// every authenticated request.
    pub fn record_key_use(&self, key_id: &str, when: SystemTime, service: &str, region: &str) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        self.lock_usage().record(key_id, when, service, region);
    }

    /// Writes all pending last-used data in one transaction (a stored later use is kept). The
    /// data leaves memory only once written: on failure, or if this future is dropped (an aborted
    /// task), it stays pending for the next flush.
    pub async fn flush_key_usage(&self) -> Result<(), StoreError> {
        self.flush_usage(false).await
    }

    /// [`Store::flush_key_usage`]; with `coalesce` (the periodic flush), a key whose use was
    /// written already is written again only once it moved by [`usage::REWRITE_AFTER`] or changed
    /// service or region.
    async fn flush_usage(&self, coalesce: bool) -> Result<(), StoreError> {
        let batch = self.lock_usage().snapshot(coalesce);
        if batch.is_empty() {
            return Ok(());
        }
        self.backend().record_key_usage(batch.clone()).await?;
        // A use recorded meanwhile that is newer than the one written stays due.
        self.lock_usage().written(&batch, SystemTime::now());
        Ok(())
    }

    /// The key (without secret) and its last use, the later of the stored and the pending one;
    /// `None` for an unknown key.
    pub async fn get_access_key_last_used(
        &self,
        key_id: &str,
    ) -> Result<Option<(AccessKey, Option<LastUsed>)>, StoreError> {
        let Some(rec) = self.backend().get_access_key(key_id).await? else {
            return Ok(None);
        };
        let pending = self.lock_usage().get(key_id);
        let last = match (rec.last_used, pending) {
            (Some(stored), Some(p)) => Some(if p.when > stored.when { p } else { stored }),
            (stored, p) => stored.or(p),
        };
        Ok(Some((rec.key, last)))
    }

    fn lock_usage(&self) -> std::sync::MutexGuard<'_, usage::PendingUsage> {
        self.inner
            .pending_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a task that flushes pending last-used data every `every` until [`Store::close`] or
    /// until the last handle is dropped. [`Store::open_sqlite`] starts one already; calling this
    /// replaces it (the previous task ends at its next tick without losing data), so one flush
    /// task runs at a time. Must be called within a tokio runtime.
    pub fn spawn_background_flush(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.subscribe();
        let generation = self.inner.flusher.fetch_add(1, Ordering::AcqRel) + 1;
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                if tokio::time::timeout(every, stop.changed()).await.is_ok() {
                    break; // closed, or the store is gone
                }
                let Some(inner) = weak.upgrade() else { break };
                if inner.flusher.load(Ordering::Acquire) != generation {
                    break; // replaced by a newer task
                }
                // On error the data stays pending and the next tick retries.
                let _ = Store { inner }.flush_usage(true).await;
            }
        })
    }

    // ----- account aliases -----

    /// Sets the account's alias. An account has at most one: a new alias replaces the previous
    /// one, as in AWS. `EntityAlreadyExists` if another account has this alias.
    pub async fn create_account_alias(
        &self,
        account_id: &str,
        alias: &str,
    ) -> Result<(), StoreError> {
        validate::account_alias(alias)?;
        self.backend().set_account_alias(account_id, alias).await
    }

    /// The account's aliases (zero or one).
    pub async fn list_account_aliases(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        self.backend().list_account_aliases(account_id).await
    }

    /// Deletes the account's alias. `NoSuchEntity` unless the account has this alias.
    pub async fn delete_account_alias(
        &self,
        account_id: &str,
        alias: &str,
    ) -> Result<(), StoreError> {
        self.backend().delete_account_alias(account_id, alias).await
    }

    // ----- housekeeping -----

    /// A number that grows with every committed change to accounts, users, tags, keys or aliases,
    /// by any process using the database (last-used updates excepted). Compare it with the value
    /// seen when a cache was filled to know whether to drop the cache. One indexed read.
    pub async fn change_stamp(&self) -> Result<u64, StoreError> {
        self.backend().change_stamp().await
    }

    /// Changes committed by any node sharing the database (PostgreSQL: a LISTEN connection,
    /// started at the first call, that reconnects by itself and sends [`Change::Resync`] each
    /// time it is listening again). `None` for SQLite, whose users compare
    /// [`Store::change_stamp`]. A receiver that lags gets `RecvError::Lagged`: treat it as a
    /// resync. Must be called within a tokio runtime.
    pub fn subscribe_changes(&self) -> Option<broadcast::Receiver<Change>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        self.backend().subscribe_changes()
    }

    /// Flushes pending last-used data, stops the background flush and closes the database. Later
    /// calls on any clone fail with `Unavailable`. Closing twice is harmless.
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.stop.send_replace(true);
        let flushed = self.flush_key_usage().await;
        let closed = self.backend().close().await;
        flushed.and(closed)
    }
}

/// Checks a page request: the place a `marker` stands for, and `max_items` within 1 to
/// [`MAX_ITEMS`].
fn page_start(marker: Option<&str>, max_items: usize) -> Result<Option<String>, StoreError> {
    if !(1..=MAX_ITEMS).contains(&max_items) {
        return Err(StoreError::InvalidInput(format!(
            "MaxItems must be between 1 and {MAX_ITEMS}"
        )));
    }
    marker.map(decode_marker).transpose()
}

/// One page of `items`, which are sorted by `place` (the backends' order: their text columns
/// compare bytes, as `String` does): those placed after `after`, at most `max_items`, with a
/// marker for the rest (the last one's place) if any are left. A marker
/// stays good when its item is deleted meanwhile: the page goes on from where it stood.
fn page_of<T>(
    items: Vec<T>,
    place: impl Fn(&T) -> String,
    after: Option<String>,
    max_items: usize,
) -> Page<T> {
    let mut items: Vec<T> = match after {
        Some(after) => items.into_iter().filter(|i| place(i) > after).collect(),
        None => items,
    };
    let next_marker = if items.len() > max_items {
        items.truncate(max_items);
        items.last().map(|i| encode_marker(&place(i)))
    } else {
        None
    };
    Page { items, next_marker }
}

/// Markers are the hex of the last returned item's place (its folded name for users): opaque to
/// clients, stable across calls.
fn encode_marker(folded_name: &str) -> String {
    hex::encode(folded_name)
}

fn decode_marker(marker: &str) -> Result<String, StoreError> {
    hex::decode(marker)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StoreError::InvalidInput("Invalid Marker.".into()))
}

#[cfg(test)]
mod paging_tests {
    use super::*;

    /// Pages of `items` (already in order) of `max` each, following the markers.
    fn walk(items: &[&str], max: usize) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let after = page_start(marker.as_deref(), max).unwrap();
            let all = items.iter().map(|s| s.to_string()).collect();
            let page = page_of(all, |s: &String| s.clone(), after, max);
            pages.push(page.items);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_follow_their_markers_to_the_end() {
        let items = ["a", "b", "c", "d", "e"];
        assert_eq!(walk(&items, 2), [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        assert_eq!(walk(&items, 5), [vec!["a", "b", "c", "d", "e"]]);
        // A full last page has no marker: IsTruncated is false exactly when nothing is left.
        assert_eq!(walk(&items[..4], 2), [vec!["a", "b"], vec!["c", "d"]]);
        assert_eq!(walk(&[], 3), [Vec::<String>::new()]);
    }

    #[test]
    fn a_marker_outlives_its_item() {
        let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = page_of(all(&["a", "b", "c"]), |s| s.clone(), None, 2);
        let marker = first.next_marker.unwrap();
        // "b", the marker's item, is deleted before the next call: the page goes on after it.
        let after = page_start(Some(&marker), 2).unwrap();
        let next = page_of(all(&["a", "c"]), |s| s.clone(), after, 2);
        assert_eq!(next.items, ["c"]);
        assert_eq!(next.next_marker, None);
    }

    #[test]
    fn bad_markers_and_sizes_are_the_clients_error() {
        for bad in ["zz", "abc", ""] {
            match page_start(Some(bad), 10) {
                Err(StoreError::InvalidInput(m)) => assert_eq!(m, "Invalid Marker."),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for size in [0, MAX_ITEMS + 1] {
            assert!(matches!(
                page_start(None, size),
                Err(StoreError::InvalidInput(_))
            ));
        }
        assert_eq!(page_start(None, MAX_ITEMS).unwrap(), None);
    }
}
