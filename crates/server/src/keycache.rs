//! The verification cache: what authentication needs to know about an access key, kept in memory for a
//! short, bounded time so a hot key costs no store round trip.
//!
//! Entries live at most [`KeyCache::ttl`]; changes made through this server (deactivation, deletion,
//! user rename or deletion) evict them at once, and changes made elsewhere (another process on the same
//! store) are seen when the entry expires. The table is bounded: when full it is cleared, which costs
//! only store lookups.

use crate::caller::Identity;
use keyward_store::{AccessKey, Secret};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What authentication needs about one long-term access key.
#[derive(Debug)]
pub struct CachedKey {
    /// The key's metadata (owner, status).
    pub key: AccessKey,
    /// The secret, for signature verification.
    pub secret: keyward_sigv4::SecretKey,
    /// The owner as a principal.
    pub identity: Identity,
    fetched: Instant,
}

impl CachedKey {
    /// A cache entry fetched now.
    pub fn new(key: AccessKey, secret: &Secret, identity: Identity) -> Self {
        Self {
            key,
            secret: keyward_sigv4::SecretKey::new(secret.expose().to_owned()),
            identity,
            fetched: Instant::now(),
        }
    }
}

/// A bounded map from access key id to [`CachedKey`].
#[derive(Debug)]
pub struct KeyCache {
    map: RwLock<HashMap<String, Arc<CachedKey>>>,
    ttl: Duration,
    capacity: usize,
}

impl KeyCache {
    /// A cache whose entries live `ttl`, holding at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// How long an entry is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fresh entry for `key_id`, if any.
    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let e = map.get(key_id)?;
        (e.fetched.elapsed() < self.ttl).then(|| Arc::clone(e))
    }

    /// Stores an entry.
    pub fn insert(&self, entry: CachedKey) -> Arc<CachedKey> {
        let entry = Arc::new(entry);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, e| e.fetched.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(entry.key.key_id.clone(), Arc::clone(&entry));
        entry
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forgets `key_id`.
    pub fn evict(&self, key_id: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// Forgets every key of `account_id` owned by `user_name` (`None`: every key of the account).
    pub fn evict_owner(&self, account_id: &str, user_name: Option<&str>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| {
            e.key.account_id != account_id
                || user_name.is_some_and(|u| {
                    !e.key
                        .user_name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(u))
                })
        });
    }
}
