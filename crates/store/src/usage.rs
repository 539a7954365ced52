//! Last uses of access keys not yet written: one entry per key, the latest use.
//!
//! Every authenticated request notes its key's use here, so the hot path is kept to one hash
//! probe that touches nothing but the table itself: the key id is held inline (access key ids are
//! 20 characters), and the service and region as the index of a pair in a small table of the
//! pairs seen (a handful in practice), instead of three strings on the heap per key, each one more
//! cache miss when many keys are in use.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use keyward_ids::{InlineKeyId as KeyId, KeyIdMap};

use crate::LastUsed;

/// How much newer than the one written a key's use must be to be written again by the periodic
/// flush (a change of service or region is written at once). A key in steady use then costs one
/// row write a minute instead of one per flush; reads merge what is pending, so they stay exact,
/// and only a crash can lose up to this much of a key's last-used time.
pub(crate) const REWRITE_AFTER: Duration = Duration::from_secs(60);

/// How long a written use is remembered (to compare the next ones with) after its key's last use.
const FORGET_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
struct Use {
    when: SystemTime,
    /// Index in [`PendingUsage::scopes`].
    scope: u32,
    /// What was last written for this key by this process: time and scope.
    written: Option<(SystemTime, u32)>,
}

/// The pending last uses.
#[derive(Default)]
pub(crate) struct PendingUsage {
    uses: KeyIdMap<Use>,
    /// (service, region) pairs the uses refer to.
    scopes: Vec<(String, String)>,
    /// Uses of key ids too long to hold inline (none of keyward's).
    long: HashMap<String, LastUsed>,
}

impl PendingUsage {
    /// Notes a use; an older one than the one held is ignored.
    pub(crate) fn record(&mut self, key_id: &str, when: SystemTime, service: &str, region: &str) {
        let Some(id) = KeyId::new(key_id) else {
            let last = LastUsed {
                when,
                service: service.to_owned(),
                region: region.to_owned(),
            };
            match self.long.get(key_id) {
                Some(old) if old.when >= when => {}
                _ => {
                    self.long.insert(key_id.to_owned(), last);
                }
            }
            return;
        };
        // One probe: the pair's index is found first (a short scan of a handful of pairs).
        let scope = self.scope(service, region);
        match self.uses.entry(id) {
            Entry::Occupied(mut o) => {
                let u = o.get_mut();
                if u.when < when {
                    u.when = when;
                    u.scope = scope;
                }
            }
            Entry::Vacant(v) => {
                v.insert(Use {
                    when,
                    scope,
                    written: None,
                });
            }
        }
    }

    fn scope(&mut self, service: &str, region: &str) -> u32 {
        if let Some(i) = self
            .scopes
            .iter()
            .position(|(s, r)| s == service && r == region)
        {
            return i as u32;
        }
        self.scopes.push((service.to_owned(), region.to_owned()));
        (self.scopes.len() - 1) as u32
    }

    /// The latest use of `key_id` seen here (written or not).
    pub(crate) fn get(&self, key_id: &str) -> Option<LastUsed> {
        match KeyId::new(key_id) {
            Some(id) => self.uses.get(&id).map(|u| self.last_used(u)),
            None => self.long.get(key_id).cloned(),
        }
    }

    fn last_used(&self, u: &Use) -> LastUsed {
        let (service, region) = &self.scopes[u.scope as usize];
        LastUsed {
            when: u.when,
            service: service.clone(),
            region: region.clone(),
        }
    }

    /// Forgets `key_id`.
    pub(crate) fn remove(&mut self, key_id: &str) {
        match KeyId::new(key_id) {
            Some(id) => {
                self.uses.remove(&id);
            }
            None => {
                self.long.remove(key_id);
            }
        }
    }

    /// The uses to write: every one not written yet, or with `coalesce`, those whose time moved
    /// by [`REWRITE_AFTER`] or whose service or region changed since written.
    pub(crate) fn snapshot(&self, coalesce: bool) -> Vec<(String, LastUsed)> {
        let gap = if coalesce {
            REWRITE_AFTER
        } else {
            Duration::ZERO
        };
        let due = |u: &Use| match u.written {
            None => true,
            Some((when, scope)) => {
                scope != u.scope || u.when.duration_since(when).is_ok_and(|d| d > gap)
            }
        };
        let mut all: Vec<_> = self
            .uses
            .iter()
            .filter(|(_, u)| due(u))
            .map(|(id, u)| (id.as_str().to_owned(), self.last_used(u)))
            .collect();
        all.extend(self.long.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// Notes what a flush wrote; forgets uses written long ago that have not changed since, and
    /// the (service, region) pairs nothing refers to any more.
    pub(crate) fn written(&mut self, written: &[(String, LastUsed)], now: SystemTime) {
        for (key_id, w) in written {
            match KeyId::new(key_id) {
                Some(id) => {
                    let scope = self.scope(&w.service, &w.region);
                    if let Some(u) = self.uses.get_mut(&id) {
                        u.written = Some((w.when, scope));
                    }
                }
                None => {
                    if self.long.get(key_id).is_some_and(|p| p.when <= w.when) {
                        self.long.remove(key_id);
                    }
                }
            }
        }
        self.uses.retain(|_, u| {
            let settled = u.written == Some((u.when, u.scope));
            !(settled && now.duration_since(u.when).is_ok_and(|d| d > FORGET_AFTER))
        });
        if self.uses.is_empty() {
            self.scopes.clear();
        } else if self.scopes.len() > 64 {
            // Bounded by what one flush interval brings: rebuild from the pairs still in use.
            let old = std::mem::take(&mut self.scopes);
            let mut remap: HashMap<u32, u32> = HashMap::new();
            let mut new_id = |scopes: &mut Vec<(String, String)>, s: u32| {
                let next = remap.len() as u32;
                *remap.entry(s).or_insert_with(|| {
                    scopes.push(old[s as usize].clone());
                    next
                })
            };
            for u in self.uses.values_mut() {
                u.scope = new_id(&mut self.scopes, u.scope);
                if let Some((when, s)) = u.written {
                    u.written = Some((when, new_id(&mut self.scopes, s)));
                }
            }
        }
    }

    /// Whether nothing is pending.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.uses.is_empty() && self.long.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    const A: &str = "AKIAAAAAAAAAAAAAAAAA";
    const B: &str = "AKIABBBBBBBBBBBBBBBB";

    fn keys(v: &[(String, LastUsed)]) -> Vec<&str> {
        let mut k: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        k.sort();
        k
    }

    #[test]
    fn the_latest_use_per_key_is_kept_with_its_service_and_region() {
        let mut p = PendingUsage::default();
        p.record(A, at(2), "sts", "us-east-1");
        p.record(A, at(1), "iam", "eu-west-1");
        assert_eq!(
            p.get(A).unwrap(),
            LastUsed {
                when: at(2),
                service: "sts".into(),
                region: "us-east-1".into()
            }
        );
        p.record(A, at(3), "iam", "eu-west-1");
        p.record(B, at(3), "sts", "us-east-1");
        let long = "K".repeat(keyward_ids::INLINE_KEY_ID_MAX + 1);
        p.record(&long, at(4), "s3", "us-west-2");
        assert_eq!(p.get(A).unwrap().service, "iam");
        assert_eq!(p.get(&long).unwrap().region, "us-west-2");
        assert_eq!(p.scopes.len(), 2, "pairs are shared");
        let all = p.snapshot(true);
        assert_eq!(keys(&all), vec![A, B, long.as_str()]);
        p.written(&all, at(5));
        assert!(p.snapshot(false).is_empty(), "all written");
        assert!(p.get(&long).is_none());
        assert_eq!(p.get(A).unwrap().when, at(3), "still answered from memory");
        p.remove(A);
        p.remove(B);
        assert!(p.is_empty());
        p.written(&[], at(6));
        assert!(p.scopes.is_empty());
    }

    #[test]
    fn a_steady_key_is_written_again_only_after_a_while_or_a_new_scope() {
        let mut p = PendingUsage::default();
        p.record(A, at(0), "sts", "us-east-1");
        p.record(B, at(0), "sts", "us-east-1");
        let first = p.snapshot(true);
        p.written(&first, at(0));
        // Used again within the minute: the periodic flush skips it, an exact one writes it.
        p.record(A, at(30), "sts", "us-east-1");
        assert!(p.snapshot(true).is_empty());
        assert_eq!(keys(&p.snapshot(false)), vec![A]);
        // A new region is written at once; a minute later the time is too.
        p.record(B, at(31), "sts", "eu-west-1");
        assert_eq!(keys(&p.snapshot(true)), vec![B]);
        let now = p.snapshot(true);
        p.written(&now, at(31));
        p.record(A, at(61), "sts", "us-east-1");
        assert_eq!(keys(&p.snapshot(true)), vec![A]);
        let now = p.snapshot(false);
        p.written(&now, at(61));
        // Settled uses are forgotten two minutes after their key's last use.
        p.written(&[], at(61 + 601));
        assert!(p.is_empty());
    }

    #[test]
    fn the_table_of_pairs_is_rebuilt_from_the_pairs_in_use() {
        let mut p = PendingUsage::default();
        for i in 0..100u64 {
            p.record(
                &format!("AKIA{i:016}"),
                at(i),
                "sts",
                &format!("region-{i}"),
            );
        }
        let all = p.snapshot(true);
        p.written(&all, at(100));
        p.record(&format!("AKIA{:016}", 99), at(200), "iam", "region-x");
        p.written(&[], at(100 + 650));
        // Only key 99 is left (the others settled and were forgotten): its scope and the one it
        // was written with.
        assert_eq!(p.uses.len(), 1);
        assert_eq!(p.scopes.len(), 2);
        let left = p.get(&format!("AKIA{:016}", 99)).unwrap();
        assert_eq!(
            (left.service.as_str(), left.region.as_str()),
            ("iam", "region-x")
        );
        assert_eq!(
            keys(&p.snapshot(true)),
            vec![format!("AKIA{:016}", 99).as_str()]
        );
    }
}
