//! L1, the in-process tier: moka (or a plain map under a test clock) of [`Entry`]s.

use super::admission::Doorkeeper;
use moka::Equivalent;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
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

/// Length of a tenant view's key prefix, `t:` + a hyphenated UUID + `:`.
pub(super) const TENANT_PREFIX_LEN: usize = 2 + 36 + 1;

/// A key in L1: the cache key as written. A key with a tenant view's prefix (`t:`, 36
/// characters, `:`) hashes in two parts, a digest of the prefix and then the rest, so a view
/// looks its keys up with the digest it computed once and the caller's key
/// ([`TenantLookup`]), without building `t:{tenant}:{key}` on each read. Equal keys hash
/// equally whichever way they are looked up ([`Plain`] splits the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct L1Key(String);

impl L1Key {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

/// `key`'s tenant prefix and the rest, when it has one.
#[inline(always)]
fn tenant_split(key: &str) -> Option<(&[u8], &str)> {
    let bytes = key.as_bytes();
    if bytes.len() >= TENANT_PREFIX_LEN
        && bytes[0] == b't'
        && bytes[1] == b':'
        && bytes[TENANT_PREFIX_LEN - 1] == b':'
    {
        // Byte 38 is the ASCII `:`, so byte 39 starts a character.
        let rest = key.get(TENANT_PREFIX_LEN..)?;
        Some((&bytes[..TENANT_PREFIX_LEN], rest))
    } else {
        None
    }
}

/// The digest a tenant prefix hashes as: the same for one prefix everywhere in the process
/// (fixed seed); the rest of the key is hashed with L1's per-process seed.
pub(super) fn prefix_digest(prefix: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x6e65_6f2d_6361_6368).hash_one(prefix)
}

#[inline(always)]
fn hash_key<H: Hasher>(key: &str, state: &mut H) {
    match tenant_split(key) {
        Some((prefix, rest)) => {
            state.write_u64(prefix_digest(prefix));
            rest.hash(state);
        }
        None => key.hash(state),
    }
}

impl Hash for L1Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.0, state);
    }
}

/// A key looked up as written.
pub(super) struct Plain<'a>(pub(super) &'a str);

impl Hash for Plain<'_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.0, state);
    }
}

impl Equivalent<L1Key> for Plain<'_> {
    #[inline(always)]
    fn equivalent(&self, key: &L1Key) -> bool {
        self.0 == key.0
    }
}

/// A tenant view's key looked up as its prefix (with the prefix's digest) and the caller's
/// key: equal to, and hashing as, the [`L1Key`] `prefix + key`.
pub(super) struct TenantLookup<'a> {
    pub(super) prefix: &'a [u8; TENANT_PREFIX_LEN],
    pub(super) digest: u64,
    pub(super) key: &'a str,
}

impl Hash for TenantLookup<'_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
        self.key.hash(state);
    }
}

impl Equivalent<L1Key> for TenantLookup<'_> {
    #[inline(always)]
    fn equivalent(&self, key: &L1Key) -> bool {
        let full = key.0.as_bytes();
        full.len() == TENANT_PREFIX_LEN + self.key.len()
            && full[TENANT_PREFIX_LEN..] == *self.key.as_bytes()
            && full[..TENANT_PREFIX_LEN] == self.prefix[..]
    }
}

/// A key as [`L1::get_by`] looks it up: as written, or as a tenant view's.
pub(super) trait Lookup: Hash + Equivalent<L1Key> {
    /// The key as written (for the test-clock map, and for a miss's lookup).
    fn text(&self) -> std::borrow::Cow<'_, str>;
}

impl Lookup for Plain<'_> {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self.0)
    }
}

impl Lookup for TenantLookup<'_> {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        let mut full = String::with_capacity(TENANT_PREFIX_LEN + self.key.len());
        // The prefix is ASCII (`t:`, a hyphenated UUID, `:`).
        full.push_str(std::str::from_utf8(self.prefix).unwrap_or_default());
        full.push_str(self.key);
        std::borrow::Cow::Owned(full)
    }
}

pub(super) enum L1<V> {
    /// Keys hash with foldhash, seeded per process (hashbrown's default), not SipHash: the
    /// hash is a good part of a hit, and namespaced keys give an attacker no seed to aim at.
    Moka(moka::sync::Cache<L1Key, Entry<V>, foldhash::fast::RandomState>),
    Manual(Mutex<HashMap<String, Entry<V>>>),
}

impl<V: Clone + Send + Sync + 'static> L1<V> {
    #[inline(always)]
    pub(super) fn get(&self, key: &str) -> Option<Entry<V>> {
        self.get_by(&Plain(key))
    }

    #[inline(always)]
    pub(super) fn get_by(&self, key: &impl Lookup) -> Option<Entry<V>> {
        match self {
            L1::Moka(cache) => cache.get(key),
            L1::Manual(map) => manual_get(map, &key.text()),
        }
    }

    /// Stores the entry `entry` makes under `key`; returns whether the write is counted as an
    /// eviction: a key L1 did not hold, written while L1 holds `capacity` entries (as of moka's
    /// last housekeeping), makes moka drop one entry for size, this one or another. No eviction
    /// listener: with one, moka takes a per-key lock on every write (measured: about 2,400
    /// more instructions per L2 hit, with its evictions' notifications).
    ///
    /// With a `doorkeeper` (a value just read from Redis), such a write of a new key into a
    /// full L1 is made only on the key's second read ([`Doorkeeper`]); `None` when it is not
    /// made (`entry` is not called).
    pub(super) fn insert(
        &self,
        key: &str,
        capacity: u64,
        doorkeeper: Option<&Doorkeeper>,
        entry: impl FnOnce() -> Entry<V>,
    ) -> Option<bool> {
        match self {
            L1::Moka(cache) => {
                let evicts = cache.entry_count() >= capacity && !cache.contains_key(&Plain(key));
                if evicts && doorkeeper.is_some_and(|d| !d.seen_before(key)) {
                    return None;
                }
                cache.insert(L1Key(key.to_owned()), entry());
                Some(evicts)
            }
            L1::Manual(map) => {
                lock(map).insert(key.to_owned(), entry());
                Some(false)
            }
        }
    }

    pub(super) fn remove(&self, key: &str) {
        match self {
            L1::Moka(cache) => cache.invalidate(&Plain(key)),
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
                    if predicate(key.as_str(), &entry) {
                        cache.invalidate(&*key);
                    }
                }
            }
            L1::Manual(map) => lock(map).retain(|k, e| !predicate(k, e)),
        }
    }

    pub(super) fn clear(&self) {
        match self {
            L1::Moka(cache) => {
                cache.invalidate_all();
                // Applies the removals now, so that moka's entry count (which the eviction
                // count reads, see `insert`) drops at once; a clear is rare and costly anyway.
                cache.run_pending_tasks();
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_prefix(id: &str) -> [u8; TENANT_PREFIX_LEN] {
        let text = format!("t:{id}:");
        let mut prefix = [0u8; TENANT_PREFIX_LEN];
        prefix.copy_from_slice(text.as_bytes());
        prefix
    }

    #[test]
    fn a_tenant_lookup_hashes_and_compares_as_the_key_it_stands_for() {
        let hasher = foldhash::fast::RandomState::default();
        let prefix = tenant_prefix("0190c8e4-0000-7000-8000-000000000001");
        let other = tenant_prefix("0190c8e4-0000-7000-8000-000000000002");
        let full = format!("{}org:1", std::str::from_utf8(&prefix).unwrap_or_default());
        let lookup = TenantLookup {
            prefix: &prefix,
            digest: prefix_digest(&prefix),
            key: "org:1",
        };
        let stored = L1Key(full.clone());
        assert_eq!(hasher.hash_one(&stored), hasher.hash_one(&lookup));
        assert_eq!(hasher.hash_one(&stored), hasher.hash_one(Plain(&full)));
        assert!(lookup.equivalent(&stored));
        assert!(Plain(&full).equivalent(&stored));
        let elsewhere = TenantLookup {
            prefix: &other,
            digest: prefix_digest(&other),
            key: "org:1",
        };
        assert!(!elsewhere.equivalent(&stored));
        assert!(!lookup.equivalent(&L1Key("org:1".to_owned())));
        assert!(!Plain("org:1").equivalent(&stored));
        // A key without a tenant prefix hashes as the string itself.
        let plain = L1Key("org:1".to_owned());
        assert_eq!(hasher.hash_one(&plain), hasher.hash_one("org:1"));
    }

    #[test]
    fn moka_finds_a_tenant_key_by_either_lookup_and_only_that_one() {
        let l1: L1<u32> = L1::Moka(
            moka::sync::Cache::builder()
                .max_capacity(100)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        );
        let prefix = tenant_prefix("0190c8e4-0000-7000-8000-00000000000a");
        let full = format!("{}org:1", std::str::from_utf8(&prefix).unwrap_or_default());
        let entry = Entry {
            value: Some(7),
            fresh_until_ms: 10,
            stale_until_ms: 10,
            ttl_ms: 10,
            tags: None,
            epoch: 0,
        };
        l1.insert(&full, 100, None, || entry);
        let lookup = TenantLookup {
            prefix: &prefix,
            digest: prefix_digest(&prefix),
            key: "org:1",
        };
        assert_eq!(l1.get_by(&lookup).and_then(|e| e.value), Some(7));
        assert_eq!(l1.get(&full).and_then(|e| e.value), Some(7));
        assert!(l1.get("org:1").is_none());
        let other = tenant_prefix("0190c8e4-0000-7000-8000-00000000000b");
        let elsewhere = TenantLookup {
            prefix: &other,
            digest: prefix_digest(&other),
            key: "org:1",
        };
        assert!(l1.get_by(&elsewhere).is_none());
        l1.remove(&full);
        assert!(l1.get_by(&lookup).is_none());
    }
}
