//! Last uses of access keys not yet written: one entry per key, the latest use.
//!
//! Every authenticated request notes its key's use here, so the hot path is kept to one hash
//! probe that touches nothing but the table itself: the key id is held inline (access key ids are
//! 20 characters), and the service and region as the index of a pair in a small table of the
//! pairs seen (a handful in practice), instead of three strings on the heap per key, each one more
//! cache miss when many keys are in use.

use std::collections::HashMap;
use std::time::SystemTime;

use keyward_ids::InlineKeyId as KeyId;

use crate::LastUsed;

#[derive(Clone, Copy)]
struct Use {
    when: SystemTime,
    /// Index in [`PendingUsage::scopes`].
    scope: u32,
}

/// The pending last uses.
#[derive(Default)]
pub(crate) struct PendingUsage {
    uses: HashMap<KeyId, Use>,
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
        if self.uses.get(&id).is_some_and(|u| u.when >= when) {
            return;
        }
        let scope = self.scope(service, region);
        self.uses.insert(id, Use { when, scope });
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

    /// The pending use of `key_id`.
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

    /// Forgets the pending use of `key_id`.
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

    /// Every pending use, to be written.
    pub(crate) fn snapshot(&self) -> Vec<(String, LastUsed)> {
        let mut all: Vec<_> = self
            .uses
            .iter()
            .map(|(id, u)| (id.as_str().to_owned(), self.last_used(u)))
            .collect();
        all.extend(self.long.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// Forgets what `written` wrote, except uses recorded meanwhile that are newer; then drops the
    /// (service, region) pairs no pending use refers to any more.
    pub(crate) fn written(&mut self, written: &[(String, LastUsed)]) {
        for (key_id, w) in written {
            if self.get(key_id).is_some_and(|p| p.when <= w.when) {
                self.remove(key_id);
            }
        }
        if self.uses.is_empty() {
            self.scopes.clear();
        } else if self.scopes.len() > 64 {
            // Bounded by what one flush interval brings: rebuild from the pairs still in use.
            let old = std::mem::take(&mut self.scopes);
            let mut remap: HashMap<u32, u32> = HashMap::new();
            for u in self.uses.values_mut() {
                let next = remap.len() as u32;
                let new = *remap.entry(u.scope).or_insert_with(|| {
                    self.scopes.push(old[u.scope as usize].clone());
                    next
                });
                u.scope = new;
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
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn the_latest_use_per_key_is_kept_with_its_service_and_region() {
        let mut p = PendingUsage::default();
        p.record("AKIAAAAAAAAAAAAAAAAA", at(2), "sts", "us-east-1");
        p.record("AKIAAAAAAAAAAAAAAAAA", at(1), "iam", "eu-west-1");
        assert_eq!(
            p.get("AKIAAAAAAAAAAAAAAAAA").unwrap(),
            LastUsed {
                when: at(2),
                service: "sts".into(),
                region: "us-east-1".into()
            }
        );
        p.record("AKIAAAAAAAAAAAAAAAAA", at(3), "iam", "eu-west-1");
        p.record("AKIABBBBBBBBBBBBBBBB", at(3), "sts", "us-east-1");
        let long = "K".repeat(keyward_ids::INLINE_KEY_ID_MAX + 1);
        p.record(&long, at(4), "s3", "us-west-2");
        assert_eq!(p.get("AKIAAAAAAAAAAAAAAAAA").unwrap().service, "iam");
        assert_eq!(p.get(&long).unwrap().region, "us-west-2");
        assert_eq!(p.scopes.len(), 2, "pairs are shared");
        let mut all = p.snapshot();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, "AKIAAAAAAAAAAAAAAAAA");
        // A use newer than the one written stays pending.
        p.record("AKIABBBBBBBBBBBBBBBB", at(9), "sts", "us-east-1");
        p.written(&all);
        assert!(p.get("AKIAAAAAAAAAAAAAAAAA").is_none());
        assert!(p.get(&long).is_none());
        assert_eq!(p.get("AKIABBBBBBBBBBBBBBBB").unwrap().when, at(9));
        p.remove("AKIABBBBBBBBBBBBBBBB");
        assert!(p.is_empty());
        p.written(&[]);
        assert!(p.scopes.is_empty());
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
        let first: Vec<_> = p
            .snapshot()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("99"))
            .collect();
        p.written(&first);
        assert_eq!(p.scopes.len(), 1);
        let left = p.get(&format!("AKIA{:016}", 99)).unwrap();
        assert_eq!(
            (left.service.as_str(), left.region.as_str()),
            ("sts", "region-99")
        );
    }
}
