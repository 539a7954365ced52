//! The private engine interface.
//!
//! An engine stores records and enforces the invariants that need atomicity (uniqueness, quotas,
//! "no delete while keys exist"); it never sees a secret in clear (the [`crate::Store`] wrapper seals
//! before and opens after), validates nothing the wrapper already validated, and knows nothing of
//! usage coalescing or pagination markers. Each mutating method is one transaction, durable when it
//! returns. Nothing here is SQLite-specific: a PostgreSQL engine implements the same methods with
//! `SELECT ... FOR UPDATE` (or serializable transactions) where SQLite takes its write lock up front.

use async_trait::async_trait;

use tokio::sync::broadcast;

use crate::events::{BatchQuery, BatchRow, PackedBatch};
use crate::model::{AccessKey, Account, KeyStatus, LastUsed, Tag, User};
use crate::{Change, KeyOwner, StoreError};

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// A new access key, its secret already sealed.
pub(crate) struct NewKey {
    pub(crate) key_id: String,
    pub(crate) account_id: String,
    /// `None`: the account's root.
    pub(crate) user_name: Option<String>,
    pub(crate) sealed_secret: Vec<u8>,
    pub(crate) created_ms: i64,
}

/// A stored access key with its sealed secret and last use.
pub(crate) struct KeyRecord {
    pub(crate) key: AccessKey,
    pub(crate) sealed_secret: Vec<u8>,
    pub(crate) last_used: Option<LastUsed>,
    /// The owning user's id and path (`None` for the root), read with the key.
    pub(crate) owner: Option<KeyOwner>,
}

/// A new user, its ids already made.
pub(crate) struct NewUser {
    pub(crate) account_id: String,
    pub(crate) name: String,
    pub(crate) user_id: String,
    pub(crate) path: String,
    pub(crate) created_ms: i64,
    pub(crate) tags: Vec<Tag>,
}

#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// `EntityAlreadyExists` if the id or the name is taken.
    async fn create_account(&self, id: &str, name: &str, created_ms: i64) -> Result<Account>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>>;
    async fn get_account_by_name(&self, name: &str) -> Result<Option<Account>>;
    /// Sorted by id.
    async fn list_accounts(&self) -> Result<Vec<Account>>;

    /// `NoSuchEntity` for an unknown account, `EntityAlreadyExists` for a name taken ignoring case.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// Matches the name ignoring ASCII case.
    async fn get_user(&self, account_id: &str, name: &str) -> Result<Option<User>>;
    /// The user with this unique id (`AIDA...`) in the account, whatever its name is now.
    async fn get_user_by_id(&self, account_id: &str, user_id: &str) -> Result<Option<User>>;
    /// Users whose path starts with `path_prefix`, sorted by folded name, strictly after the folded
    /// name `after`, at most `limit`.
    async fn list_users(
        &self,
        account_id: &str,
        path_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>>;
    async fn update_user(
        &self,
        account_id: &str,
        name: &str,
        new_name: Option<&str>,
        new_path: Option<&str>,
    ) -> Result<User>;
    /// `DeleteConflict` while the user has access keys.
    async fn delete_user(&self, account_id: &str, name: &str) -> Result<()>;
    /// Adds or replaces (matching keys ignoring case); `LimitExceeded` past `max_tags`.
    async fn tag_user(
        &self,
        account_id: &str,
        name: &str,
        tags: &[Tag],
        max_tags: usize,
    ) -> Result<()>;
    /// Removes the keys that exist (ignoring case); absent keys are not an error.
    async fn untag_user(&self, account_id: &str, name: &str, keys: &[String]) -> Result<()>;

    /// Atomically: the owner exists, it has fewer than `max_keys` keys, the id is free; then inserts.
    async fn insert_access_key(&self, key: NewKey, max_keys: usize) -> Result<AccessKey>;
    /// Users with one key each, as [`Backend::create_user`] then [`Backend::insert_access_key`]
    /// for every pair, in one transaction where the engine can (all or nothing); bulk loading.
    /// Each user comes with candidate keys (the same secret under different ids): the first whose
    /// id is free is inserted.
    async fn create_users_with_keys(
        &self,
        batch: Vec<(NewUser, Vec<NewKey>)>,
        max_keys: usize,
    ) -> Result<Vec<(User, AccessKey)>> {
        let mut made = Vec::with_capacity(batch.len());
        for (user, keys) in batch {
            let user = self.create_user(user).await?;
            let mut inserted = None;
            let mut last = StoreError::Unavailable("no candidate access key".into());
            for key in keys {
                match self.insert_access_key(key, max_keys).await {
                    Ok(k) => {
                        inserted = Some(k);
                        break;
                    }
                    Err(e @ StoreError::EntityAlreadyExists(_)) => last = e,
                    Err(e) => return Err(e),
                }
            }
            made.push((user, inserted.ok_or(last)?));
        }
        Ok(made)
    }
    async fn get_access_key(&self, key_id: &str) -> Result<Option<KeyRecord>>;
    /// The keys of `key_ids` that exist, in one round trip (any order).
    async fn get_access_keys(&self, key_ids: &[String]) -> Result<Vec<KeyRecord>>;
    /// Sorted by creation time then id; `NoSuchEntity` for an unknown user or account.
    async fn list_access_keys(
        &self,
        account_id: &str,
        user_name: Option<&str>,
    ) -> Result<Vec<AccessKey>>;
    /// `NoSuchEntity` unless the key belongs to that owner.
    async fn update_access_key_status(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
        status: KeyStatus,
    ) -> Result<()>;
    async fn delete_access_key(
        &self,
        account_id: &str,
        user_name: Option<&str>,
        key_id: &str,
    ) -> Result<()>;
    /// One transaction; keeps the later of the stored and the given use; skips deleted keys.
    async fn record_key_usage(&self, batch: Vec<(String, LastUsed)>) -> Result<()>;

    /// Sets the account's one alias (replacing any previous one); `EntityAlreadyExists` if another
    /// account has it.
    async fn set_account_alias(&self, account_id: &str, alias: &str) -> Result<()>;
    async fn list_account_aliases(&self, account_id: &str) -> Result<Vec<String>>;
    /// `NoSuchEntity` unless the account has that alias.
    async fn delete_account_alias(&self, account_id: &str, alias: &str) -> Result<()>;

    /// Inserts the packed event batches of existing accounts (others are skipped), in one
    /// transaction; with `synced` false its commit need not wait for the disk (see
    /// [`crate::Store::append_batch_unsynced`]).
    async fn append_event_batches(&self, batches: Vec<PackedBatch>, synced: bool) -> Result<()>;
    /// The account's batches the query selects, `max_ms DESC, seq DESC`.
    async fn event_batches(&self, q: BatchQuery) -> Result<Vec<BatchRow>>;
    /// Deletes at most `limit` batches whose newest event is older than `before_ms`, oldest
    /// first; returns how many events they held.
    async fn prune_events(&self, before_ms: i64, limit: usize) -> Result<u64>;

    /// A counter that every committed change of accounts, users, keys or aliases increases
    /// (last-used updates excepted).
    async fn change_stamp(&self) -> Result<u64>;
    /// Committed changes announced by any process sharing the database, if the engine can
    /// announce them (an engine that cannot returns `None`; callers then poll `change_stamp`).
    fn subscribe_changes(&self) -> Option<broadcast::Receiver<Change>> {
        None
    }
    /// Releases the engine's resources; later calls fail with `Unavailable`.
    async fn close(&self) -> Result<()>;
}
