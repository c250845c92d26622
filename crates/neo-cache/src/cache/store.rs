//! Writes: encoding and framing for Redis, TTLs with jitter, fail-safe lifetimes, filling L1.

use super::admission::Doorkeeper;
use super::hybrid::HybridCache;
use super::l1::{Entry, Tags};
use super::l2::{RedisTier, Write};
use super::options::EntryOptions;
use crate::codec::frame;
use crate::{Error, Result};
use rand::RngExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) fn stale_until(&self, fresh_until: u64) -> u64 {
        let fail_safe = &self.inner.config.fail_safe;
        if fail_safe.enabled {
            fresh_until.saturating_add(
                u64::try_from(fail_safe.max_stale_age.as_millis()).unwrap_or(u64::MAX),
            )
        } else {
            fresh_until
        }
    }

    /// [`fill_l1`](Self::fill_l1) with a copy of `value` read from Redis, made only when there
    /// is an L1 and it admits `key` (a full L1 on the key's second read: [`super::admission`]).
    pub(super) fn fill_l1_from(&self, key: &str, value: &Option<V>, fresh_until: u64, now: u64) {
        self.fill_l1_with(
            key,
            fresh_until,
            now,
            self.inner.doorkeeper.as_ref(),
            || (value.clone(), None),
        );
    }

    pub(super) fn fill_l1(
        &self,
        key: &str,
        value: Option<V>,
        fresh_until: u64,
        now: u64,
        tags: Option<Tags>,
    ) {
        self.fill_l1_with(key, fresh_until, now, None, || (value, tags));
    }

    /// Writes the value and tags `contents` gives to L1 (see [`L1::insert`](super::l1::L1::insert) for `doorkeeper`),
    /// counting an eviction when the write makes one.
    fn fill_l1_with(
        &self,
        key: &str,
        fresh_until: u64,
        now: u64,
        doorkeeper: Option<&Doorkeeper>,
        contents: impl FnOnce() -> (Option<V>, Option<Tags>),
    ) {
        let Some(l1) = &self.inner.l1 else { return };
        let l1_fresh = match self.inner.config.l1.ttl {
            Some(ttl) => fresh_until.min(now + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            None => fresh_until,
        };
        let evicts = l1.insert(key, self.inner.config.l1.capacity, doorkeeper, || {
            let (value, tags) = contents();
            Entry {
                value,
                fresh_until_ms: l1_fresh,
                stale_until_ms: self.stale_until(fresh_until),
                ttl_ms: l1_fresh.saturating_sub(now).max(1),
                tags,
                epoch: self.inner.epoch.load(Ordering::Relaxed),
            }
        });
        if evicts == Some(true) {
            self.inner.stats.eviction();
        }
    }

    pub(super) fn ttl_for(&self, value_present: bool, options: &EntryOptions) -> Duration {
        let base = match (options.ttl, value_present) {
            (Some(ttl), _) => ttl,
            (None, true) => self.inner.config.ttl,
            (None, false) => self.inner.config.negative_ttl,
        };
        let jitter = self.inner.config.ttl_jitter.clamp(0.0, 1.0);
        if jitter > 0.0 {
            base.mul_f64(1.0 + rand::rng().random_range(0.0..jitter))
        } else {
            base
        }
    }

    /// Writes entries to L2 (one round trip, with one backplane message) and L1.
    pub(super) async fn store(
        &self,
        entries: Vec<(String, Option<V>)>,
        options: &EntryOptions,
    ) -> Result<()> {
        self.store_announced(entries, options, true).await
    }

    /// [`store`](Self::store) without the backplane message.
    pub(super) async fn store_quietly(
        &self,
        entries: Vec<(String, Option<V>)>,
        options: &EntryOptions,
    ) -> Result<()> {
        self.store_announced(entries, options, false).await
    }

    async fn store_announced(
        &self,
        entries: Vec<(String, Option<V>)>,
        options: &EntryOptions,
        announce: bool,
    ) -> Result<()> {
        let now = self.now_ms();
        let tags: Option<Tags> =
            (!options.tags.is_empty()).then(|| Arc::new(options.tags.clone().into_boxed_slice()));
        let mut writes = Vec::with_capacity(entries.len());
        let mut prepared = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let ttl = self.ttl_for(value.is_some(), options);
            let fresh_until = now + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if self.inner.l2.is_some() {
                let payload = value
                    .as_ref()
                    .map(|v| self.inner.codec.encode(v))
                    .transpose()?;
                let (bytes, sizes) = frame(
                    payload.as_deref(),
                    fresh_until,
                    self.inner.config.compression,
                    self.inner.config.compression_threshold,
                )?;
                if bytes.len() > self.inner.config.max_payload_bytes {
                    return Err(Error::PayloadTooLarge {
                        key,
                        size: bytes.len(),
                        max: self.inner.config.max_payload_bytes,
                    });
                }
                self.inner.stats.stored(sizes.encoded, sizes.stored);
                writes.push(Write {
                    key: self.redis_key(&key),
                    bytes,
                    ttl: Duration::from_millis(self.stale_until(fresh_until) - now),
                    tag_keys: options.tags.iter().map(|t| self.tag_key(t)).collect(),
                });
            }
            prepared.push((key, value, fresh_until));
        }
        if let Some(l2) = self.l2_available() {
            let carried = announce
                .then(|| self.carried_value(l2, &prepared, &writes))
                .flatten();
            let message = match (prepared.as_slice(), carried) {
                _ if !announce => Vec::new(),
                ([(key, _, _)], Some(bytes)) => {
                    let mut payload = Vec::with_capacity(key.len() + 1 + bytes.len());
                    payload.extend_from_slice(key.as_bytes());
                    payload.push(b'\n');
                    payload.extend_from_slice(bytes);
                    self.message('v', &payload)
                }
                ([(key, _, _)], None) => self.message('k', key.as_bytes()),
                _ => self.message(
                    'm',
                    prepared
                        .iter()
                        .map(|(k, _, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                        .as_bytes(),
                ),
            };
            let publish = if announce {
                self.announce(&message)
            } else {
                None
            };
            // A message carrying the value is sent in the same MULTI as the write, so the
            // messages of two writers arrive in the order their writes were applied.
            let atomic = carried.is_some() && publish.is_some();
            if let Err(error) = l2.write(&writes, publish, atomic).await {
                self.l2_failed(error)?;
            }
        }
        for (key, value, fresh_until) in prepared {
            self.fill_l1(&key, value, fresh_until, now, tags.clone());
        }
        Ok(())
    }

    /// The stored bytes a write's backplane message carries: those of a write of one entry,
    /// when they fit `backplane.max_value_bytes` and the tier can make the write and its
    /// message one atomic step (not on a cluster).
    fn carried_value<'w>(
        &self,
        l2: &RedisTier,
        prepared: &[(String, Option<V>, u64)],
        writes: &'w [Write],
    ) -> Option<&'w [u8]> {
        match (prepared, writes) {
            ([_], [write])
                if write.bytes.len() <= self.inner.config.backplane.max_value_bytes
                    && self.publishes()
                    && !l2.is_cluster() =>
            {
                Some(&write.bytes)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cache, CacheConfig, EntryOptions, HybridCache, L1Config};

    async fn set(cache: &HybridCache<u32>, key: &str, value: u32) {
        cache
            .set(key, value, &EntryOptions::default())
            .await
            .expect("set");
    }

    #[tokio::test]
    async fn evictions_count_new_keys_written_at_capacity_and_not_updates() {
        let cache = HybridCache::<u32>::memory(CacheConfig {
            l1: L1Config {
                capacity: 50,
                ..L1Config::default()
            },
            ..CacheConfig::named("evictions")
        })
        .expect("a cache");
        for i in 0..200 {
            set(&cache, &format!("k{i}"), 1).await;
        }
        let held = cache.l1_entries();
        let dropped = 200 - held;
        let counted = cache.stats().evictions;
        // Counted from moka's entry count as of its last housekeeping, which trails the
        // writes by at most the 64 writes moka records between two runs.
        assert!(
            counted <= dropped && counted + 64 >= dropped && counted > 0,
            "counted {counted}, dropped {dropped}"
        );

        // Writing keys L1 holds replaces them: no eviction.
        let mut rewritten = 0;
        for i in 0..200 {
            let key = format!("k{i}");
            if cache.get(&key).await.expect("get").is_some() {
                set(&cache, &key, 2).await;
                rewritten += 1;
            }
        }
        assert!(rewritten > 0);
        assert_eq!(cache.stats().evictions, counted);

        // After a clear L1 has room again at once.
        cache.clear().await.expect("clear");
        for i in 0..10 {
            set(&cache, &format!("n{i}"), 1).await;
        }
        assert_eq!(cache.stats().evictions, counted);
    }
}
