//! The verification cache: what authentication needs to know about an access key, kept in memory for a
//! short, bounded time so a hot key costs no store round trip; and the same for the IAM user behind
//! session credentials (GetSessionToken), so a session costs no user lookup per request.
//!
//! Only active keys are cached (a refused key is looked up each time, so re-activation works at once).
//! An eviction bumps a generation; a store read that began before it is not inserted ([`Ticket`]).
//! Entries live at most [`KeyCache::ttl`]; changes made through this server (deactivation, deletion,
//! user rename or deletion) evict them at once, and changes made elsewhere (another process on the same
//! store) are seen when the entry expires. The table is bounded: when full it is cleared, which costs
//! only store lookups.
//!
//! Keys in steady use are re-read before their entry expires ([`KeyCache::take_refresh`]), unless
//! the store's change stamp shows that nothing was committed since the entry was read: then the
//! entry is renewed in place ([`KeyCache::renew`]), keeping its derived signing key, at most
//! [`MAX_RENEWALS`] times in a row, so that even a change the stamp does not count (an edit of the
//! database by hand) is seen within about a minute.

use crate::caller::{Caller, Identity};
use keyward_ids::{InlineKeyId, KeyIdMap};
use keyward_store::{AccessKey, KeyStatus, Secret};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What authentication needs about one long-term access key.
///
/// With many keys in use each request's entry is cold, so it holds only what a request reads, in
/// the order it reads it (`repr(C)` keeps that order): age, last noted use, the caller (whose
/// text pointer is then in the first cache line, so the text's load starts with the entry's),
/// status, then the signing key's slot; the key id, account and owner name are the caller's. The
/// entry spans three adjacent cache lines; a request follows two pointers (map slot, entry) and
/// one more for the caller's text, instead of four when the caller had an allocation of its
/// own.
#[derive(Debug)]
#[repr(C)]
pub struct CachedKey {
    /// What the entry is known to be current as of: nanoseconds since [`epoch`] (8 bytes where an
    /// `Instant` takes 16, which keeps what a request reads within the entry's first two cache
    /// lines). Set when the store read began ([`Ticket`]), moved on by [`KeyCache::renew`].
    fetched: AtomicU64,
    /// The last use passed on to the store's pending last uses: its whole second (low 32 bits)
    /// and scope index plus one (high 32 bits), 0 for none; see [`KeyCache::use_due`].
    noted: AtomicU64,
    /// The caller a request signed with this key acts as, its identity included; also the key's
    /// id and account. Held in the entry itself: a request holds the entry
    /// ([`crate::caller::CallerRef::Key`]), so the caller's text is one load from the entry
    /// instead of two.
    pub owner: Caller,
    /// The key's status.
    pub status: KeyStatus,
    /// Queued for [`KeyCache::take_refresh`] already.
    refresh_queued: AtomicBool,
    /// Renewals in place since the key was last read from the store (see [`MAX_RENEWALS`]).
    renewals: AtomicU8,
    /// The secret, for signature verification, with the signing key last derived from it (the
    /// slot first, the secret itself last: it is read only to derive a key).
    pub secret: keyward_sigv4::SlottedSecret,
}

/// The instant entry ages are counted from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl CachedKey {
    /// How long ago the entry was read from the store.
    fn age(&self) -> Duration {
        Duration::from_nanos(now_nanos().saturating_sub(self.fetched.load(Ordering::Relaxed)))
    }
}

/// Most distinct (service, region) pairs [`KeyCache::use_due`] tells apart; a use in any other is
/// noted every time.
const NOTED_SCOPES: usize = 64;

impl CachedKey {
    /// A cache entry fetched now.
    pub fn new(key: AccessKey, secret: &Secret, identity: Identity) -> Self {
        let owner = Caller::new(&key.account_id, &identity, &key.key_id, None);
        Self {
            fetched: AtomicU64::new(now_nanos()),
            noted: AtomicU64::new(0),
            status: key.status,
            refresh_queued: AtomicBool::new(false),
            renewals: AtomicU8::new(0),
            owner,
            secret: keyward_sigv4::SlottedSecret::new(keyward_sigv4::SecretKey::new(
                secret.expose().to_owned(),
            )),
        }
    }
}

/// Most renewals in place in a row ([`KeyCache::renew`]) before a key in use is read from the
/// store again: with entries renewed when ~3/4 through their life, about a minute with the
/// default 10 s lifetime.
pub const MAX_RENEWALS: u8 = 6;

/// Proof of when a store read began, for [`KeyCache::insert`]; see [`KeyCache::ticket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The eviction generation then.
    generation: u64,
    /// When (nanoseconds since [`epoch`]).
    began: u64,
}

/// A session user's identity and when it was read.
#[derive(Debug)]
struct CachedUser {
    identity: Identity,
    fetched: Instant,
}

/// A bounded map from access key id to [`CachedKey`], and one from (account, user id) to the
/// session user's identity; both are bounded, expire and are evicted alike (a session user by its
/// current name).
#[derive(Debug)]
pub struct KeyCache {
    /// Bumped by every eviction, under the map's write lock: an entry read from the store before an
    /// eviction may be stale and is not inserted (see [`KeyCache::ticket`]).
    generation: AtomicU64,
    map: RwLock<KeyIdMap<Arc<CachedKey>>>,
    users: RwLock<HashMap<(String, String), CachedUser>>,
    ttl: Duration,
    capacity: usize,
    /// Keys used in the last quarter of their entry's life, to be read again before it ends.
    refresh: std::sync::Mutex<Vec<String>>,
    /// The (service, region) pairs of noted uses, at most [`NOTED_SCOPES`]; an entry's noted use
    /// refers to one by its index.
    scopes: RwLock<Vec<(Box<str>, Box<str>)>>,
    /// The store's change stamp as last read by [`KeyCache::stamp_seen`], and when a read of it
    /// first returned that value (nanoseconds since [`epoch`]).
    stamp: std::sync::Mutex<Option<(u64, u64)>>,
}

impl KeyCache {
    /// A cache whose entries live `ttl`, holding at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            generation: AtomicU64::new(0),
            map: RwLock::new(KeyIdMap::default()),
            users: RwLock::new(HashMap::new()),
            ttl,
            capacity,
            refresh: std::sync::Mutex::new(Vec::new()),
            scopes: RwLock::new(Vec::new()),
            stamp: std::sync::Mutex::new(None),
        }
    }

    /// Whether a use of `entry`'s key at `now` with `service` and `region` must be noted in the
    /// store's last uses ([`keyward_store::Store::record_key_use`]): not when a use in the same
    /// whole second and scope was noted already. The store keeps the first use of each second
    /// instead of the last then, which changes nothing that can be seen: last-used dates are shown
    /// in whole seconds. With many keys in use, this spares most requests a probe of the store's
    /// table of pending uses, which is cold for each of them; the entry's own first cache line
    /// holds what is compared.
    pub fn use_due(&self, entry: &CachedKey, now: SystemTime, service: &str, region: &str) -> bool {
        let Some(scope) = self.scope_index(service, region) else {
            return true;
        };
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stamp = (u64::from(scope) + 1) << 32 | (second & u64::from(u32::MAX));
        // Two requests racing here may both note the use: harmless.
        if entry.noted.load(Ordering::Relaxed) == stamp {
            return false;
        }
        entry.noted.store(stamp, Ordering::Relaxed);
        true
    }

    /// The index of (service, region) among the scopes of noted uses, added if new and there is
    /// room; `None` when the table is full.
    fn scope_index(&self, service: &str, region: &str) -> Option<u32> {
        let find = |scopes: &[(Box<str>, Box<str>)]| {
            scopes
                .iter()
                .position(|(s, r)| **s == *service && **r == *region)
                .map(|i| i as u32)
        };
        if let Some(i) = find(&self.scopes.read().unwrap_or_else(|p| p.into_inner())) {
            return Some(i);
        }
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = find(&scopes) {
            return Some(i);
        }
        if scopes.len() >= NOTED_SCOPES {
            return None;
        }
        scopes.push((service.into(), region.into()));
        Some((scopes.len() - 1) as u32)
    }

    /// How long an entry is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fresh entry for `key_id`, if any. An entry used in the last quarter of its life is
    /// queued (once) for [`KeyCache::take_refresh`].
    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let e = map.get(&InlineKeyId::new(key_id)?)?;
        let age = e.age();
        if age >= self.ttl {
            return None;
        }
        if age >= self.ttl - self.ttl / 4
            && !e.refresh_queued.load(Ordering::Relaxed)
            && !e.refresh_queued.swap(true, Ordering::Relaxed)
        {
            self.refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(key_id.to_owned());
        }
        Some(Arc::clone(e))
    }

    /// The keys queued for a refresh since the last call: re-read them and [`KeyCache::insert`]
    /// what is still active (taking a [`KeyCache::ticket`] first), evict the rest.
    pub fn take_refresh(&self) -> Vec<String> {
        std::mem::take(&mut *self.refresh.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Take before reading from the store what will be inserted: an insert whose ticket is older
    /// than an eviction is skipped, so a lookup that raced a deactivation (or a notification of one
    /// from another node) cannot put the state it read before the change back into the cache.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::SeqCst),
            began: now_nanos(),
        }
    }

    /// Notes the store's change stamp just read (call once its read has returned); returns when a
    /// read of it first returned that value (now, if it moved). Nothing was committed since then:
    /// an entry whose store read began after it is still current.
    pub fn stamp_seen(&self, stamp: u64) -> u64 {
        let mut seen = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        match *seen {
            Some((s, since)) if s == stamp => since,
            _ => {
                let now = now_nanos();
                *seen = Some((stamp, now));
                now
            }
        }
    }

    /// Renews in place the entries of `ids` whose store read began at or after `current_since`
    /// (see [`KeyCache::stamp_seen`]) and that were renewed fewer than [`MAX_RENEWALS`] times in
    /// a row: they are current as of `ticket`, taken before the stamp was read, and live on from
    /// then. Returns the ids left to read from the store.
    pub fn renew(&self, ids: Vec<String>, current_since: u64, ticket: Ticket) -> Vec<String> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        ids.into_iter()
            .filter(|id| {
                let Some(e) = InlineKeyId::new(id).and_then(|k| map.get(&k)) else {
                    return true;
                };
                if e.fetched.load(Ordering::Relaxed) < current_since
                    || e.renewals.load(Ordering::Relaxed) >= MAX_RENEWALS
                {
                    return true;
                }
                e.renewals.fetch_add(1, Ordering::Relaxed);
                e.fetched.fetch_max(ticket.began, Ordering::Relaxed);
                e.refresh_queued.store(false, Ordering::Relaxed);
                false
            })
            .collect()
    }

    /// Stores an entry read from the store after `ticket` was taken (skipped if an eviction came in
    /// between); returns it either way.
    pub fn insert(&self, ticket: Ticket, entry: CachedKey) -> Arc<CachedKey> {
        // Current as of when the read began, not when it ended.
        entry.fetched.store(ticket.began, Ordering::Relaxed);
        let entry = Arc::new(entry);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return entry;
        }
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, e| e.age() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        // keyward's key ids always fit; one that did not would simply not be cached.
        if let Some(id) = InlineKeyId::new(entry.owner.access_key_id()) {
            map.insert(id, Arc::clone(&entry));
        }
        entry
    }

    /// The fresh identity of the user whose unique id is `user_id` in `account_id`, if cached.
    pub fn get_user(&self, account_id: &str, user_id: &str) -> Option<Identity> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let e = users.get(&(account_id.to_owned(), user_id.to_owned()))?;
        (e.fetched.elapsed() < self.ttl).then(|| e.identity.clone())
    }

    /// Stores the identity of the user `user_id` of `account_id`, read from the store after
    /// `ticket` was taken (skipped if an eviction came in between).
    pub fn insert_user(&self, ticket: Ticket, account_id: &str, user_id: &str, identity: Identity) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        if users.len() >= self.capacity {
            let ttl = self.ttl;
            users.retain(|_, e| e.fetched.elapsed() < ttl);
            if users.len() >= self.capacity {
                users.clear();
            }
        }
        users.insert(
            (account_id.to_owned(), user_id.to_owned()),
            CachedUser {
                identity,
                fetched: Instant::now(),
            },
        );
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
        users.clear();
    }

    /// Forgets `key_id`.
    pub fn evict(&self, key_id: &str) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = InlineKeyId::new(key_id) {
            map.remove(&id);
        }
    }

    /// Forgets every key of `account_id` owned by `user_name` (`None`: every key of the account).
    /// Also forgets the matching session users.
    pub fn evict_owner(&self, account_id: &str, user_name: Option<&str>) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        users.retain(|(acct, _), e| {
            acct != account_id
                || user_name.is_some_and(|u| match &e.identity {
                    Identity::User { name, .. } => !name.eq_ignore_ascii_case(u),
                    _ => true,
                })
        });
        drop(users);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.retain(|_, e| {
            e.owner.account_id() != account_id
                || user_name.is_some_and(|u| {
                    !e.owner
                        .user_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case(u))
                })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity::User {
            name: name.into(),
            user_id: format!("AIDA{name}"),
            arn: format!("arn:aws:iam::123456789012:user/{name}"),
        }
    }

    #[test]
    fn session_users_are_found_by_id_and_evicted_with_their_owner_by_name() {
        let cache = KeyCache::new(Duration::from_secs(60), 10);
        cache.insert_user(cache.ticket(), "123456789012", "AIDAAlice", user("Alice"));
        cache.insert_user(cache.ticket(), "123456789012", "AIDAbob", user("bob"));
        assert_eq!(
            cache.get_user("123456789012", "AIDAAlice"),
            Some(user("Alice"))
        );
        assert_eq!(cache.get_user("210987654321", "AIDAAlice"), None);
        // The name is not a key: another user id (a new user who took the name) is not found.
        assert_eq!(cache.get_user("123456789012", "Alice"), None);
        cache.evict_owner("123456789012", Some("ALICE"));
        assert_eq!(cache.get_user("123456789012", "AIDAAlice"), None);
        assert_eq!(cache.get_user("123456789012", "AIDAbob"), Some(user("bob")));
        cache.evict_owner("123456789012", None);
        assert_eq!(cache.get_user("123456789012", "AIDAbob"), None);
        cache.insert_user(cache.ticket(), "123456789012", "AIDAcarol", user("carol"));
        cache.clear();
        assert_eq!(cache.get_user("123456789012", "AIDAcarol"), None);
    }

    #[test]
    fn session_users_expire_and_stay_bounded() {
        let cache = KeyCache::new(Duration::ZERO, 2);
        cache.insert_user(cache.ticket(), "123456789012", "AIDAa", user("a"));
        assert_eq!(cache.get_user("123456789012", "AIDAa"), None);
        let cache = KeyCache::new(Duration::from_secs(60), 2);
        for n in ["a", "b", "c"] {
            cache.insert_user(cache.ticket(), "123456789012", &format!("AIDA{n}"), user(n));
        }
        assert!(cache.users.read().unwrap().len() <= 2);
        assert_eq!(cache.get_user("123456789012", "AIDAc"), Some(user("c")));
    }

    #[test]
    fn a_read_that_raced_an_eviction_is_not_cached() {
        let cache = KeyCache::new(Duration::from_secs(60), 10);
        // A lookup takes its ticket, then (while it reads the store) the user is changed elsewhere.
        let before = cache.ticket();
        cache.evict_owner("123456789012", Some("dave"));
        cache.insert_user(before, "123456789012", "dave", user("dave"));
        assert_eq!(
            cache.get_user("123456789012", "dave"),
            None,
            "stale read kept"
        );
        let before = cache.ticket();
        cache.evict("AKIAOTHERKEY");
        cache.insert_user(before, "123456789012", "dave", user("dave"));
        assert_eq!(
            cache.get_user("123456789012", "dave"),
            None,
            "any eviction counts"
        );
        // A read begun after the eviction is cached.
        let after = cache.ticket();
        cache.insert_user(after, "123456789012", "dave", user("dave"));
        assert_eq!(cache.get_user("123456789012", "dave"), Some(user("dave")));
    }

    fn key(id: &str) -> CachedKey {
        let key = AccessKey {
            key_id: id.into(),
            account_id: "123456789012".into(),
            user_name: None,
            status: keyward_store::KeyStatus::Active,
            created: std::time::SystemTime::UNIX_EPOCH,
        };
        CachedKey::new(
            key,
            &Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
            Identity::Root,
        )
    }

    #[test]
    fn keys_used_late_in_their_life_are_queued_for_a_refresh_once() {
        let cache = KeyCache::new(Duration::from_millis(400), 10);
        cache.insert(cache.ticket(), key("AKIAAAAAAAAAAAAAAAAA"));
        cache.insert(cache.ticket(), key("AKIABBBBBBBBBBBBBBBB"));
        assert!(cache.get("AKIAAAAAAAAAAAAAAAAA").is_some());
        assert!(cache.take_refresh().is_empty(), "young entries stay");
        std::thread::sleep(Duration::from_millis(320));
        // Still answered from the cache, and queued once however often it is used.
        for _ in 0..3 {
            assert!(cache.get("AKIAAAAAAAAAAAAAAAAA").is_some());
        }
        assert_eq!(
            cache.take_refresh(),
            vec!["AKIAAAAAAAAAAAAAAAAA".to_owned()]
        );
        assert!(cache.get("AKIAAAAAAAAAAAAAAAAA").is_some());
        assert!(cache.take_refresh().is_empty());
        // A refreshed entry starts a new life; the unused one expires.
        cache.insert(cache.ticket(), key("AKIAAAAAAAAAAAAAAAAA"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.get("AKIAAAAAAAAAAAAAAAAA").is_some());
        assert!(cache.get("AKIABBBBBBBBBBBBBBBB").is_none());
        assert!(cache.take_refresh().is_empty());
    }

    #[test]
    fn entries_read_after_the_stamp_was_first_seen_are_renewed_in_place_a_few_times() {
        let cache = KeyCache::new(Duration::from_millis(800), 10);
        let a = "AKIAAAAAAAAAAAAAAAAA";
        let b = "AKIABBBBBBBBBBBBBBBB";
        cache.insert(cache.ticket(), key(a));
        // The stamp as first read: entries read before that read ended do not count as current.
        let since = cache.stamp_seen(7);
        assert_eq!(
            cache.stamp_seen(7),
            since,
            "unchanged: still seen since then"
        );
        cache.insert(cache.ticket(), key(b));
        let first_b = cache.get(b).unwrap();
        std::thread::sleep(Duration::from_millis(640));
        let ids = vec![
            a.to_owned(),
            b.to_owned(),
            "AKIACCCCCCCCCCCCCCCC".to_owned(),
        ];
        // `a` (read before) and the unknown key are left to read; `b` is renewed: the same entry,
        // with a new life that starts at the ticket.
        let left = cache.renew(ids.clone(), since, cache.ticket());
        assert_eq!(left, vec![a.to_owned(), "AKIACCCCCCCCCCCCCCCC".to_owned()]);
        std::thread::sleep(Duration::from_millis(400));
        let renewed = cache.get(b).expect("lives past its first life");
        assert!(Arc::ptr_eq(&first_b, &renewed));
        assert!(cache.get(a).is_none(), "expired");
        // Queued again late in its new life, like any entry.
        std::thread::sleep(Duration::from_millis(240));
        assert!(cache.get(b).is_some());
        assert_eq!(cache.take_refresh(), vec![b.to_owned()]);
        // At most MAX_RENEWALS in a row, then it must be read again.
        for _ in 1..MAX_RENEWALS {
            assert!(cache
                .renew(vec![b.to_owned()], since, cache.ticket())
                .is_empty());
        }
        assert_eq!(
            cache.renew(vec![b.to_owned()], since, cache.ticket()),
            vec![b.to_owned()]
        );
        // A moved stamp: nothing read before now is current.
        let moved = cache.stamp_seen(8);
        assert!(moved > since);
        cache.insert(cache.ticket(), key(b));
        let _ = cache.stamp_seen(9);
        assert_eq!(
            cache.renew(vec![b.to_owned()], cache.stamp_seen(9), cache.ticket()),
            vec![b.to_owned()],
            "read before the stamp moved to 9"
        );
    }

    #[test]
    fn a_use_is_due_once_per_second_and_scope() {
        let cache = KeyCache::new(Duration::from_secs(60), 10);
        let k = key("AKIAAAAAAAAAAAAAAAAA");
        let other = key("AKIABBBBBBBBBBBBBBBB");
        let due = |k: &CachedKey, t, s, r| cache.use_due(k, t, s, r);
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert!(due(&k, t, "sts", "us-east-1"), "the first use");
        assert!(!due(&k, t + Duration::from_millis(700), "sts", "us-east-1"));
        assert!(due(&other, t, "sts", "us-east-1"), "another key");
        assert!(due(&k, t, "iam", "us-east-1"), "another service");
        assert!(due(&k, t, "iam", "eu-west-1"), "another region");
        assert!(!due(&k, t, "iam", "eu-west-1"));
        assert!(due(&k, t, "sts", "us-east-1"), "back to the first scope");
        assert!(
            due(&k, t + Duration::from_millis(750), "sts", "us-east-1"),
            "the next second"
        );
        assert!(!due(
            &other,
            t + Duration::from_millis(500),
            "sts",
            "us-east-1"
        ));
        // Once the table of scopes is full, uses in a new one are noted every time.
        for i in 0..NOTED_SCOPES {
            cache.use_due(&k, t, "sts", &format!("region-{i}"));
        }
        assert!(due(&k, t, "sts", "yet-another-region"));
        assert!(due(&k, t, "sts", "yet-another-region"));
        assert!(due(&k, t, "iam", "eu-west-1"), "known scopes still count");
        assert!(!due(&k, t, "iam", "eu-west-1"));
    }

    #[test]
    fn what_a_request_reads_comes_first() {
        // Age and noted use, then the caller: its text pointer lies within the first
        // 16 + 16 + 56 = 88 bytes of the Arc's allocation, so the text's load can start with the
        // entry's first lines. Then the status and the slot (lock, length, 32-byte key, scope).
        // All of it within 224 bytes with the Arc's header.
        assert_eq!(std::mem::offset_of!(CachedKey, owner), 16);
        assert!(std::mem::size_of::<Caller>() <= 56);
        assert!(
            std::mem::size_of::<CachedKey>() <= 208,
            "{}",
            std::mem::size_of::<CachedKey>()
        );
    }
}
