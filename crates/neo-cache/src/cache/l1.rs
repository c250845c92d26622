//! L1, the in-process tier: moka (or a plain map under a test clock) of [`Entry`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An entry's tags, behind one thin pointer (see [`Entry`]).
pub(super) type Tags = Arc<Box<[String]>>;

/// One cached entry. Cloned on every L1 read, so everything but the value is `Copy` or
/// shared: an untagged hit costs the value's clone and nothing else.
///
/// `repr(C)` keeps the value first, where moka's `get` writes it, so moving it out of a hit
/// copies in the same chunks moka stored (a copy straddling those stores stalls on store
/// forwarding); the tags are one thin pointer for the same reason. Measured: the L1 hit
/// without these two went from 1.12-1.13x raw moka to 1.17-1.20x.
#[derive(Debug, Clone)]
#[repr(C)]
pub(super) struct Entry<V> {
    pub(super) value: Option<V>,
    pub(super) fresh_until_ms: u64,
    pub(super) stale_until_ms: u64,
    pub(super) ttl_ms: u64,
    pub(super) tags: Option<Tags>,
    pub(super) epoch: u64,
}

impl<V> Entry<V> {
    /// Fresh at `now` and written in the current `epoch` (entries of an older epoch may have
    /// missed invalidations while the backplane was down).
    #[inline(always)]
    pub(super) fn is_fresh(&self, now: u64, epoch: u64) -> bool {
        Self::fresh(self.epoch, self.fresh_until_ms, now, epoch)
    }

    /// [`is_fresh`](Self::is_fresh) on the two fields it reads, for a caller that has moved
    /// them out of the entry.
    #[inline(always)]
    pub(super) fn fresh(written_in: u64, fresh_until_ms: u64, now: u64, epoch: u64) -> bool {
        written_in == epoch && now < fresh_until_ms
    }

    /// Within the last `eager` share of its TTL at `now`: a read should refresh it in the
    /// background. Only for a fresh entry.
    pub(super) fn refresh_due(&self, now: u64, eager: f64) -> bool {
        eager > 0.0 && ((self.fresh_until_ms - now) as f64) < eager * self.ttl_ms as f64
    }

    pub(super) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| t.iter().any(|x| x == tag))
    }
}

pub(super) enum L1<V> {
    /// Keys hash with foldhash, seeded per process (hashbrown's default), not SipHash: the
    /// hash is a good part of a hit, and namespaced keys give an attacker no seed to aim at.
    Moka(moka::sync::Cache<String, Entry<V>, foldhash::fast::RandomState>),
    Manual(Mutex<HashMap<String, Entry<V>>>),
}

impl<V: Clone + Send + Sync + 'static> L1<V> {
    #[inline(always)]
    pub(super) fn get(&self, key: &str) -> Option<Entry<V>> {
        match self {
            L1::Moka(cache) => cache.get(key),
            L1::Manual(map) => manual_get(map, key),
        }
    }

    pub(super) fn insert(&self, key: String, entry: Entry<V>) {
        match self {
            L1::Moka(cache) => cache.insert(key, entry),
            L1::Manual(map) => {
                lock(map).insert(key, entry);
            }
        }
    }

    pub(super) fn remove(&self, key: &str) {
        match self {
            L1::Moka(cache) => cache.invalidate(key),
            L1::Manual(map) => {
                lock(map).remove(key);
            }
        }
    }

    pub(super) fn remove_if(
        &self,
        predicate: impl Fn(&str, &Entry<V>) -> bool + Send + Sync + 'static,
    ) {
        match self {
            // A scan instead of moka's invalidation closures, which would tax every read;
            // tag and pattern invalidations are rare next to hits.
            L1::Moka(cache) => {
                for (key, entry) in cache.iter() {
                    if predicate(&key, &entry) {
                        cache.invalidate(key.as_str());
                    }
                }
            }
            L1::Manual(map) => lock(map).retain(|k, e| !predicate(k, e)),
        }
    }

    pub(super) fn clear(&self) {
        match self {
            L1::Moka(cache) => cache.invalidate_all(),
            L1::Manual(map) => lock(map).clear(),
        }
    }
}

/// The test-clock L1's read, out of line so the moka hit path stays small (inlined, the map
/// lookup and its lock grew the hit's stack frame).
#[inline(never)]
fn manual_get<V: Clone>(map: &Mutex<HashMap<String, Entry<V>>>, key: &str) -> Option<Entry<V>> {
    #[cfg(test)]
    MANUAL_READS.with(|reads| reads.set(reads.get() + 1));
    lock(map).get(key).cloned()
}

pub(super) use neo_core::sync::lock;

#[cfg(test)]
thread_local! {
    /// Reads of the test-clock L1 on this thread, for tests that count them.
    pub(super) static MANUAL_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
