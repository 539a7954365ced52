//! Failed-authentication throttling: sliding-window failure counts per source address and per access
//! key id, in bounded tables, checked before a request costs a store lookup or a signature check.
//!
//! Three tables, each a sliding window of failures (six slots per window, see [`Window`]):
//!
//! * per **source** (an IPv4 address, or an IPv6 /64): past the limit, every request from the source is
//!   refused with the throttling error, whatever its credentials.
//! * per **key id** (all sources together): past the limit, the key id is *hot*. A hot key id refuses
//!   early only the sources that have themselves failed for it in the window (the **pair** table); any
//!   other source is still verified, so the key's holder keeps working, and a failure is answered with
//!   the throttling error (and marks the pair). Anyone can make a key id hot by sending bad signatures
//!   with it, so being hot must not lock its holder out; see `docs/security.md`.
//!
//! Only failures of a presented credential count (see [`crate::auth::AuthFailure::counts`]); a refused
//! request is not counted again, so a source that keeps hammering gets `limit` attempts per window.
//! Nothing here touches the store. Key ids are kept as keyed 64-bit hashes, so an entry has a fixed
//! size whatever the client sent, and each table holds at most its capacity: when a shard is full its
//! expired entries go first, then the entries with the fewest failures (the ones that matter least).

use keyward_protocol::{ApiError, Dialect};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default failures a source may have in a window before it is refused.
pub const DEFAULT_FAILURES_PER_SOURCE: u32 = 60;
/// Default failures a key id may have in a window (all sources together) before it is hot.
pub const DEFAULT_FAILURES_PER_KEY: u32 = 60;
/// Default window length, in seconds.
pub const DEFAULT_WINDOW_SECS: u64 = 60;
/// Default most entries of each table.
pub const DEFAULT_CAPACITY: usize = 100_000;

const SHARDS: usize = 16;

/// Limits of the throttle. A limit of 0 disables that table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures per window after which a source is refused; 0: never.
    pub per_source: u32,
    /// Failures per window after which a key id is hot; 0: never.
    pub per_key: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// Most entries of each table.
    pub capacity: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_source: DEFAULT_FAILURES_PER_SOURCE,
            per_key: DEFAULT_FAILURES_PER_KEY,
            window: Duration::from_secs(DEFAULT_WINDOW_SECS),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// Where a request came from, as the throttle counts it: IPv4 addresses one by one, IPv6 by /64 (one
/// host usually owns a whole /64, so counting single IPv6 addresses would be trivially evaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (also for IPv4-mapped IPv6 addresses).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The source of a request from `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Source::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its source is over the per-source limit.
    Source,
    /// Its key id is hot and its source has failed for that key id in the window.
    Key,
    /// Its key id is hot and it failed authentication.
    KeyFailed,
}

impl Reason {
    fn index(self) -> usize {
        match self {
            Reason::Source => 0,
            Reason::Key => 1,
            Reason::KeyFailed => 2,
        }
    }
}

/// The outcome of [`Throttle::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// `Some`: refuse the request now, without authenticating it.
    pub refuse: Option<Reason>,
    /// The key id is hot: if authentication fails, answer with the throttling error.
    pub key_hot: bool,
}

/// AWS's throttling error in `dialect`, which AWS SDKs retry with backoff.
pub fn throttling_error(dialect: Dialect) -> ApiError {
    match dialect {
        Dialect::S3 => ApiError::new(503, "SlowDown", "Please reduce your request rate."),
        Dialect::Json => ApiError::new(400, "ThrottlingException", "Rate exceeded"),
        Dialect::Iam | Dialect::Sts => ApiError::new(400, "Throttling", "Rate exceeded"),
    }
}

/// The time source of a throttle: time since an arbitrary start.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Sub-buckets ("slots") per window.
const SLOTS: u64 = 6;

/// Failure counts of one key in the current slot and the [`SLOTS`] slots before it (a slot is a
/// sixth of the window). The count of a window is the sum of all of them: every failure of the last
/// window is counted, and none older than a window and one slot — an error only towards throttling
/// a little early, never towards letting a source fail more often than its limit in any window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Index of the current slot.
    bucket: u64,
    /// Counts by slot index modulo `SLOTS + 1`.
    counts: [u32; SLOTS as usize + 1],
}

impl Window {
    fn first(b: u64) -> Self {
        let mut counts = [0; SLOTS as usize + 1];
        counts[(b % (SLOTS + 1)) as usize] = 1;
        Self { bucket: b, counts }
    }

    /// Moves to slot `b` (the current one), dropping counts that fell out of the window.
    fn roll(&mut self, b: u64) {
        if b <= self.bucket {
            return;
        }
        if b - self.bucket > SLOTS {
            self.counts = [0; SLOTS as usize + 1];
        } else {
            for s in self.bucket + 1..=b {
                self.counts[(s % (SLOTS + 1)) as usize] = 0;
            }
        }
        self.bucket = b;
    }

    fn add(&mut self, b: u64) {
        self.roll(b);
        let c = &mut self.counts[(b % (SLOTS + 1)) as usize];
        *c = c.saturating_add(1);
    }

    /// Failures in the window ending in slot `b`, times `window_ms` (the unit [`Throttle::check`]
    /// compares in).
    fn estimate(&self, b: u64, _now_ms: u64, window_ms: u64) -> u128 {
        let mut w = *self;
        w.roll(b);
        let n: u64 = w.counts.iter().map(|&c| u64::from(c)).sum();
        u128::from(n) * u128::from(window_ms)
    }

    fn expired(&self, b: u64) -> bool {
        self.bucket + SLOTS < b
    }
}

/// A bounded, sharded table of sliding windows keyed by `u64` (hashes or packed addresses).
#[derive(Debug)]
struct Table {
    shards: Vec<Mutex<HashMap<u64, Window>>>,
    shard_cap: usize,
    evictions: AtomicU64,
    /// One more than the latest slot in which a failure was recorded (0: none ever). When that slot
    /// has left the window, every entry counts 0, so [`Table::is_quiet`] answers without locking.
    last_slot: AtomicU64,
    /// Shard locks taken (tests of the lock-free path).
    #[cfg(test)]
    locks: AtomicU64,
}

impl Table {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: (capacity / SHARDS).max(1),
            evictions: AtomicU64::new(0),
            last_slot: AtomicU64::new(0),
            #[cfg(test)]
            locks: AtomicU64::new(0),
        }
    }

    /// True when no entry can count a failure in the window ending in slot `b`: nothing was recorded
    /// in slots `b - SLOTS ..= b` (the ones [`Window::estimate`] sums). Lock-free.
    fn is_quiet(&self, b: u64) -> bool {
        // No slot is ever 0 after `+ 1`, so 0 means "never".
        match self.last_slot.load(Ordering::Acquire) {
            0 => true,
            l => (l - 1).saturating_add(SLOTS) < b,
        }
    }

    fn shard(&self, k: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Window>> {
        // Keys are already well mixed (keyed hashes); the top bits pick the shard.
        let i = (k >> 60) as usize % SHARDS;
        #[cfg(test)]
        self.locks.fetch_add(1, Ordering::Relaxed);
        // A panic while holding the lock cannot leave a window half-updated in a harmful way.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failures of key `k` (hashed only when the table is not quiet) in the window ending in
    /// slot `b`, times `window_ms`.
    fn estimate(&self, k: impl FnOnce() -> u64, b: u64, now_ms: u64, window_ms: u64) -> u128 {
        if self.is_quiet(b) {
            return 0;
        }
        let k = k();
        self.shard(k)
            .get(&k)
            .map_or(0, |w| w.estimate(b, now_ms, window_ms))
    }

    fn record(&self, k: u64, b: u64, now_ms: u64, window_ms: u64) {
        let mut shard = self.shard(k);
        // Published under the shard lock, before the count: a check that sees the table quiet is
        // ordered before this failure.
        self.last_slot
            .fetch_max(b.saturating_add(1), Ordering::AcqRel);
        if let Some(w) = shard.get_mut(&k) {
            w.add(b);
            return;
        }
        if shard.len() >= self.shard_cap {
            let before = shard.len();
            shard.retain(|_, w| !w.expired(b));
            if shard.len() >= self.shard_cap {
                // Still full of live entries: drop the eighth with the fewest failures. Sorting costs
                // O(n log n) once per n/8 insertions.
                let mut counts: Vec<u128> = shard
                    .values()
                    .map(|w| w.estimate(b, now_ms, window_ms))
                    .collect();
                let drop = (self.shard_cap / 8).max(1);
                let (_, &mut threshold, _) = counts.select_nth_unstable(drop - 1);
                let mut left = drop;
                shard.retain(|_, w| {
                    if left > 0 && w.estimate(b, now_ms, window_ms) <= threshold {
                        left -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            self.evictions
                .fetch_add((before - shard.len()) as u64, Ordering::Relaxed);
        }
        shard.insert(k, Window::first(b));
    }

    /// True when nothing was ever recorded (lock-free, needs no clock).
    fn never_recorded(&self) -> bool {
        self.last_slot.load(Ordering::Acquire) == 0
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// The failed-authentication throttle of one server.
pub struct Throttle {
    config: ThrottleConfig,
    window_ms: u64,
    clock: Clock,
    hasher: RandomState,
    sources: Table,
    keys: Table,
    pairs: Table,
    refused: [AtomicU64; 3],
    failures: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle on the real (monotonic) clock.
    pub fn new(config: ThrottleConfig) -> Self {
        let start = Instant::now();
        Self::with_clock(config, Arc::new(move || start.elapsed()))
    }

    /// A throttle reading time from `clock` (tests).
    pub fn with_clock(config: ThrottleConfig, clock: Clock) -> Self {
        let window_ms = u64::try_from(config.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            sources: Table::new(config.capacity),
            keys: Table::new(config.capacity),
            pairs: Table::new(config.capacity),
            config,
            window_ms,
            clock,
            hasher: RandomState::new(),
            refused: Default::default(),
            failures: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn now(&self) -> (u64, u64) {
        let ms = u64::try_from((self.clock)().as_millis()).unwrap_or(u64::MAX);
        (ms / (self.window_ms / SLOTS).max(1), ms)
    }

    fn source_key(&self, s: Source) -> u64 {
        self.hasher.hash_one(s)
    }

    fn key_key(&self, key_id: &str) -> u64 {
        self.hasher.hash_one(key_id)
    }

    fn pair_key(&self, s: Option<Source>, key_id: &str) -> u64 {
        self.hasher.hash_one((s, key_id))
    }

    /// Decides, before any authentication work, whether a request from `source` presenting `key_id`
    /// is refused, and whether its key id is hot. Counts the refusal.
    ///
    /// While no failure is in the window (the usual case), this takes no lock and hashes nothing; while
    /// none was ever recorded, it does not even read the clock.
    pub fn check(&self, source: Option<Source>, key_id: Option<&str>) -> Gate {
        let mut gate = Gate {
            refuse: None,
            key_hot: false,
        };
        // Pairs are only recorded with keys, and only consulted for hot keys.
        if self.sources.never_recorded() && self.keys.never_recorded() {
            return gate;
        }
        let (b, ms) = self.now();
        let w = self.window_ms;
        let over = |est: u128, limit: u32| est >= u128::from(limit) * u128::from(w);
        if let (Some(s), limit @ 1..) = (source, self.config.per_source) {
            if over(
                self.sources.estimate(|| self.source_key(s), b, ms, w),
                limit,
            ) {
                gate.refuse = Some(Reason::Source);
            }
        }
        if let (None, Some(k), limit @ 1..) = (gate.refuse, key_id, self.config.per_key) {
            if over(self.keys.estimate(|| self.key_key(k), b, ms, w), limit) {
                gate.key_hot = true;
                if self.pairs.estimate(|| self.pair_key(source, k), b, ms, w) > 0 {
                    gate.refuse = Some(Reason::Key);
                }
            }
        }
        if let Some(r) = gate.refuse {
            self.refused(r);
        }
        gate
    }

    /// Counts a refusal for `reason` (for failures answered with the throttling error because their
    /// key id was hot).
    pub fn refused(&self, reason: Reason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one authentication failure of a request from `source` presenting `key_id`.
    pub fn failure(&self, source: Option<Source>, key_id: Option<&str>) {
        let (b, ms) = self.now();
        let w = self.window_ms;
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let (Some(s), 1..) = (source, self.config.per_source) {
            self.sources.record(self.source_key(s), b, ms, w);
        }
        if let (Some(k), 1..) = (key_id, self.config.per_key) {
            self.keys.record(self.key_key(k), b, ms, w);
            self.pairs.record(self.pair_key(source, k), b, ms, w);
        }
    }

    /// The throttle's counters in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut s = String::with_capacity(1024);
        s.push_str("# HELP keyward_auth_throttled_total Requests answered with the throttling error, by reason.\n# TYPE keyward_auth_throttled_total counter\n");
        for (reason, a) in ["source", "key", "key_failed"].iter().zip(&self.refused) {
            let _ = writeln!(
                s,
                "keyward_auth_throttled_total{{reason=\"{reason}\"}} {}",
                a.load(Ordering::Relaxed)
            );
        }
        s.push_str("# HELP keyward_auth_failures_counted_total Authentication failures counted by the throttle.\n# TYPE keyward_auth_failures_counted_total counter\n");
        let _ = writeln!(
            s,
            "keyward_auth_failures_counted_total {}",
            self.failures.load(Ordering::Relaxed)
        );
        let tables = [
            ("source", &self.sources),
            ("key", &self.keys),
            ("pair", &self.pairs),
        ];
        s.push_str("# HELP keyward_throttle_entries Entries in the throttle's tables.\n# TYPE keyward_throttle_entries gauge\n");
        for (name, t) in tables {
            let _ = writeln!(
                s,
                "keyward_throttle_entries{{table=\"{name}\"}} {}",
                t.len()
            );
        }
        s.push_str("# HELP keyward_throttle_evictions_total Entries dropped from a full throttle table.\n# TYPE keyward_throttle_evictions_total counter\n");
        for (name, t) in tables {
            let _ = writeln!(
                s,
                "keyward_throttle_evictions_total{{table=\"{name}\"}} {}",
                t.evictions.load(Ordering::Relaxed)
            );
        }
        s
    }

    #[cfg(test)]
    fn sizes(&self) -> [usize; 3] {
        [self.sources.len(), self.keys.len(), self.pairs.len()]
    }

    /// Shard locks taken so far, all tables together.
    #[cfg(test)]
    fn locks(&self) -> u64 {
        [&self.sources, &self.keys, &self.pairs]
            .iter()
            .map(|t| t.locks.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn clocked(config: ThrottleConfig) -> (Throttle, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&t);
        let th = Throttle::with_clock(
            config,
            Arc::new(move || Duration::from_millis(c.load(Ordering::Relaxed))),
        );
        (th, t)
    }

    fn cfg(per_source: u32, per_key: u32) -> ThrottleConfig {
        ThrottleConfig {
            per_source,
            per_key,
            window: Duration::from_secs(60),
            capacity: 1000,
        }
    }

    fn ip(s: &str) -> Option<Source> {
        Some(Source::of(s.parse().unwrap()))
    }

    #[test]
    fn source_is_refused_at_the_limit_and_others_are_not() {
        let (t, _) = clocked(cfg(5, 0));
        let a = ip("10.0.0.1");
        for _ in 0..4 {
            t.failure(a, Some("AKIAX"));
        }
        assert_eq!(t.check(a, None).refuse, None);
        t.failure(a, None);
        assert_eq!(t.check(a, Some("AKIAOTHER")).refuse, Some(Reason::Source));
        assert_eq!(t.check(ip("10.0.0.2"), Some("AKIAX")).refuse, None);
        assert_eq!(t.check(None, Some("AKIAX")).refuse, None);
    }

    #[test]
    fn window_slides() {
        // 60 s window, 10 s slots.
        let (t, clock) = clocked(cfg(10, 0));
        let a = ip("192.0.2.7");
        clock.store(59_000, Ordering::Relaxed);
        for _ in 0..10 {
            t.failure(a, None);
        }
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
        // Still inside the window (and the slot after it): all 10 count.
        clock.store(115_000, Ordering::Relaxed);
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
        // The slot of those failures (50-60 s) has left the window and the slot before it.
        clock.store(120_000, Ordering::Relaxed);
        assert_eq!(t.check(a, None).refuse, None);
        for _ in 0..9 {
            t.failure(a, None);
        }
        assert_eq!(t.check(a, None).refuse, None, "9 < 10");
        t.failure(a, None);
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
        // A window and a slot later nothing is left.
        clock.store(190_000, Ordering::Relaxed);
        assert_eq!(t.check(a, None).refuse, None);
    }

    #[test]
    fn failures_spread_over_a_whole_window_all_count() {
        // A slow client: one failure every 5.9 s, 10 of them over 59 s, crossing slot boundaries.
        let (t, clock) = clocked(cfg(10, 0));
        let a = ip("192.0.2.8");
        for i in 0..10u64 {
            clock.store(31_000 + i * 5_900, Ordering::Relaxed);
            assert_eq!(t.check(a, None).refuse, None, "after {i} failures");
            t.failure(a, None);
        }
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
    }

    #[test]
    fn failures_at_the_limit_rate_are_never_refused_for_long() {
        // One failure every 7 s (8.6 a minute) never reaches 10 in any window of 70 s or less.
        let (t, clock) = clocked(cfg(10, 0));
        let a = ip("192.0.2.9");
        for i in 0..100u64 {
            clock.store(i * 7_000, Ordering::Relaxed);
            assert_eq!(t.check(a, None).refuse, None, "at failure {i}");
            t.failure(a, None);
        }
    }

    #[test]
    fn hot_key_refuses_only_sources_that_failed_for_it() {
        let (t, _) = clocked(cfg(0, 3));
        let attacker = ip("203.0.113.9");
        let holder = ip("198.51.100.1");
        for _ in 0..3 {
            t.failure(attacker, Some("AKIAVICTIM"));
        }
        let g = t.check(attacker, Some("AKIAVICTIM"));
        assert_eq!(g.refuse, Some(Reason::Key));
        let g = t.check(holder, Some("AKIAVICTIM"));
        assert_eq!(
            g,
            Gate {
                refuse: None,
                key_hot: true
            }
        );
        assert_eq!(
            t.check(attacker, Some("AKIAOTHER")),
            Gate {
                refuse: None,
                key_hot: false
            }
        );
        // Once the holder's source fails for the hot key, it is refused too.
        t.failure(holder, Some("AKIAVICTIM"));
        assert_eq!(
            t.check(holder, Some("AKIAVICTIM")).refuse,
            Some(Reason::Key)
        );
    }

    #[test]
    fn clean_checks_take_no_lock_until_a_failure_is_in_the_window() {
        let (t, clock) = clocked(cfg(3, 3));
        let a = ip("10.2.0.1");
        let clean = Gate {
            refuse: None,
            key_hot: false,
        };
        // Nothing ever failed: no lock, whatever the source and key.
        for i in 0..100 {
            let key = format!("AKIA{i}");
            assert_eq!(t.check(ip(&format!("10.2.1.{i}")), Some(&key)), clean);
        }
        assert_eq!(t.locks(), 0);
        // A failure in the window: checks look it up again (and still see it).
        clock.store(10_000, Ordering::Relaxed);
        for _ in 0..3 {
            t.failure(a, Some("AKIAX"));
        }
        let recorded = t.locks();
        assert_eq!(t.check(a, Some("AKIAX")).refuse, Some(Reason::Source));
        assert!(t.locks() > recorded);
        assert_eq!(
            t.check(ip("10.2.0.2"), Some("AKIAX")),
            Gate {
                refuse: None,
                key_hot: true
            }
        );
        // Up to the end of the window and the slot after it the failures still count...
        clock.store(79_999, Ordering::Relaxed);
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
        // ...then the tables are quiet again: no lock, nothing refused.
        clock.store(80_000, Ordering::Relaxed);
        let before = t.locks();
        assert_eq!(t.check(a, Some("AKIAX")), clean);
        assert_eq!(t.locks(), before);
        // And a new failure is seen at once: the limit still holds exactly.
        for _ in 0..2 {
            t.failure(a, None);
        }
        assert_eq!(t.check(a, None).refuse, None, "2 < 3");
        t.failure(a, None);
        assert_eq!(t.check(a, None).refuse, Some(Reason::Source));
    }

    #[test]
    fn zero_disables() {
        let (t, _) = clocked(cfg(0, 0));
        let a = ip("10.1.1.1");
        for _ in 0..1000 {
            t.failure(a, Some("AKIAX"));
        }
        assert_eq!(
            t.check(a, Some("AKIAX")),
            Gate {
                refuse: None,
                key_hot: false
            }
        );
        assert_eq!(t.sizes(), [0, 0, 0]);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
    }

    #[test]
    fn tables_stay_bounded_under_a_flood() {
        let (t, clock) = clocked(ThrottleConfig {
            per_source: 5,
            per_key: 5,
            window: Duration::from_secs(60),
            capacity: 4096,
        });
        // The attacker's own address keeps its count through the flood: full tables evict the entries
        // with the fewest failures first.
        let attacker = ip("203.0.113.1");
        for _ in 0..5 {
            t.failure(attacker, None);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..1_000_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v6 = std::net::Ipv6Addr::from((u128::from(x) << 64) | u128::from(i));
            let key = format!("AKIA{x:016X}");
            t.failure(Some(Source::of(IpAddr::V6(v6))), Some(&key));
            if i % 100_000 == 0 {
                clock.fetch_add(1, Ordering::Relaxed);
            }
        }
        for n in t.sizes() {
            assert!(n <= 4096, "table size {n}");
        }
        assert_eq!(t.check(attacker, None).refuse, Some(Reason::Source));
        let evicted = t.keys.evictions.load(Ordering::Relaxed);
        assert!(evicted >= 1_000_000 - 4096, "{evicted}");
        assert!(t.render_metrics().contains(&format!(
            "keyward_throttle_evictions_total{{table=\"key\"}} {evicted}"
        )));
    }

    #[test]
    fn throttling_errors_per_dialect() {
        let e = throttling_error(Dialect::Iam);
        assert_eq!(
            (e.status, &*e.code, &*e.message),
            (400, "Throttling", "Rate exceeded")
        );
        let r = throttling_error(Dialect::Sts).render(Dialect::Sts, "rid");
        assert!(r.body.contains(
            "<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
        ));
        let e = throttling_error(Dialect::S3);
        assert_eq!((e.status, &*e.code), (503, "SlowDown"));
        assert_eq!(e.message, "Please reduce your request rate.");
        let e = throttling_error(Dialect::Json);
        assert_eq!((e.status, &*e.code), (400, "ThrottlingException"));
    }
}
