//! Reads: `get`'s own future (its first poll reads L1), the L1 hit paths, and the lookup
//! through L1 and L2 that a miss runs.

use super::hybrid::HybridCache;
use super::l1::{Entry, Lookup as L1Lookup, Plain};
use super::validate::validate_key;
use crate::Result;
use crate::codec::unframe;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::sync::atomic::Ordering;

/// The future `get` returns. Its first poll reads L1 and, on a hit, hands the value straight
/// to the caller: no state machine is built and the value is moved once. A miss starts the
/// lookup, boxed behind `dyn` (owning a handle and the key) so the hit path neither carries
/// the (large) future nor calls its destructor; its Redis round trip dwarfs the allocations
/// and the dynamic call.
pub(super) struct GetFuture<'c, 'k, V> {
    pub(super) cache: &'c HybridCache<V>,
    pub(super) key: &'k str,
    pub(super) started: bool,
    pub(super) miss: Option<MissFuture<V>>,
}

pub(super) type MissFuture<V> = Pin<Box<dyn Future<Output = Result<Option<V>>> + Send>>;

/// Builds and boxes the miss future outside `poll`, so the hit path's stack frame does not
/// hold the (large) future while it is built. `seen` is what the first L1 read found (at
/// `now`), which the lookup uses instead of reading L1 again.
#[cold]
#[inline(never)]
fn start_miss<V>(
    cache: &HybridCache<V>,
    key: &str,
    seen: Option<Entry<V>>,
    now: u64,
) -> MissFuture<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (cache, key) = (cache.clone(), key.to_owned());
    let stale = L1Stale::of(seen, now);
    Box::pin(async move { cache.get_miss(&key, stale).await })
}

/// What an L1 read that found no fresh entry hands on to the lookup, so the lookup does not
/// read L1 a second time: the entry's value when it may still be served stale (before its
/// `stale_until_ms`), with its freshness limit, to weigh against Redis' copy.
pub(super) struct L1Stale<V>(Option<(Option<V>, u64)>);

impl<V> L1Stale<V> {
    /// Nothing from L1 (no L1, or no entry there).
    pub(super) fn none() -> Self {
        L1Stale(None)
    }

    /// What `seen`, read at `now` and found not fresh, leaves for the lookup.
    pub(super) fn of(seen: Option<Entry<V>>, now: u64) -> Self {
        L1Stale(
            seen.filter(|entry| now < entry.stale_until_ms)
                .map(|entry| (entry.value, entry.fresh_until_ms)),
        )
    }
}

impl<V> Future for GetFuture<'_, '_, V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = Result<Option<V>>;

    #[inline]
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            // A miss leaves the lookup in `this.miss`.
            let hit = this.cache.l1_poll(this.key, &mut this.miss);
            if hit.is_ready() {
                return hit;
            }
        }
        match &mut this.miss {
            Some(miss) => miss.as_mut().poll(cx),
            None => panic!("the future of HybridCache::get was polled after it completed"),
        }
    }
}

pub(super) enum Lookup<V> {
    Fresh { value: Option<V>, refresh_due: bool },
    Miss { stale: Option<Option<V>> },
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The L1 hit path of `get_or_load` (through [`l1_fresh`](Self::l1_fresh)), synchronous
    /// so callers do not build the (large) lookup future for it: a fresh, current-epoch entry,
    /// counted as a hit, and the time it was judged fresh at. The time and epoch are read
    /// before the lookup, so their loads overlap it. `get` has its own,
    /// [`l1_poll`](Self::l1_poll).
    #[inline(always)]
    fn l1_hit(&self, key: &str) -> Result<(Entry<V>, u64), L1Stale<V>> {
        let Some(l1) = self.inner.l1.as_ref() else {
            return Err(L1Stale::none());
        };
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        match l1.get(key) {
            Some(entry) if entry.is_fresh(now, epoch) => {
                self.inner.stats.l1(true);
                Ok((entry, now))
            }
            seen => Err(L1Stale::of(seen, now)),
        }
    }

    /// The L1 hit path of `get`: [`l1_hit`](Self::l1_hit) shaped as `get`'s own poll result
    /// (`Pending`: no fresh entry), so that a hit moves the value once, straight into the
    /// caller's result, and the rest of the entry is never copied.
    ///
    /// On a miss it starts the lookup in `miss`, handing it what L1 held.
    #[inline(always)]
    pub(super) fn l1_poll(
        &self,
        key: &str,
        miss: &mut Option<MissFuture<V>>,
    ) -> std::task::Poll<Result<Option<V>>> {
        self.l1_poll_by(&Plain(key), miss)
    }

    /// [`l1_poll`](Self::l1_poll) for a key looked up as `key` describes (a tenant view's
    /// key is looked up without being built; see [`super::l1::TenantLookup`]).
    #[inline(always)]
    pub(super) fn l1_poll_by(
        &self,
        key: &impl L1Lookup,
        miss: &mut Option<MissFuture<V>>,
    ) -> std::task::Poll<Result<Option<V>>> {
        use std::task::Poll;
        let Some(l1) = self.inner.l1.as_ref() else {
            *miss = Some(start_miss(self, &key.text(), None, 0));
            return Poll::Pending;
        };
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        let seen = l1.get_by(key);
        if seen
            .as_ref()
            .is_some_and(|entry| entry.is_fresh(now, epoch))
        {
            self.inner.stats.l1(true);
            return Poll::Ready(Ok(seen.and_then(|entry| entry.value)));
        }
        *miss = Some(start_miss(self, &key.text(), seen, now));
        Poll::Pending
    }

    /// [`l1_hit`](Self::l1_hit) for `get_or_load`: the value and whether it is due for an
    /// eager refresh, or what L1 leaves for the lookup.
    #[inline]
    pub(super) fn l1_fresh(&self, key: &str) -> Result<(Option<V>, bool), L1Stale<V>> {
        let (entry, now) = self.l1_hit(key)?;
        let refresh_due = entry.refresh_due(now, self.inner.config.eager_refresh);
        Ok((entry.value, refresh_due))
    }

    /// `get` after an L1 miss. L1 only ever holds valid keys (every write validates), so a
    /// hit needs no check; a miss validates before anything reaches Redis.
    async fn get_miss(&self, key: &str, l1: L1Stale<V>) -> Result<Option<V>> {
        validate_key(key)?;
        self.get_slow(key, l1).await
    }

    async fn get_slow(&self, key: &str, l1: L1Stale<V>) -> Result<Option<V>> {
        match self.lookup_after_l1(key, l1).await? {
            Lookup::Fresh { value, .. } => Ok(value),
            Lookup::Miss { stale: Some(value) }
                if self.inner.l2.is_some() && self.l2_available().is_none() =>
            {
                // Redis is down: the last known value beats nothing.
                self.inner.stats.stale_served();
                Ok(value)
            }
            Lookup::Miss { .. } => Ok(None),
        }
    }

    /// L1, then (on a miss there) Redis.
    pub(super) async fn lookup(&self, key: &str) -> Result<Lookup<V>> {
        match self.l1_fresh(key) {
            Ok((value, refresh_due)) => Ok(Lookup::Fresh { value, refresh_due }),
            Err(l1) => self.lookup_after_l1(key, l1).await,
        }
    }

    /// The lookup after an L1 read that found no fresh entry (`l1` is what it left): counts
    /// the L1 miss and asks Redis, without reading L1 again.
    pub(super) async fn lookup_after_l1(&self, key: &str, l1: L1Stale<V>) -> Result<Lookup<V>> {
        self.count_l1_miss();
        self.lookup_l2(key, l1).await
    }

    /// Counts an L1 miss (when there is an L1).
    pub(super) fn count_l1_miss(&self) {
        if self.inner.l1.is_some() {
            self.inner.stats.l1(false);
        }
    }

    /// Redis' copy of `key`, weighed against what L1 left (`l1`); counts nothing for L1.
    pub(super) async fn lookup_l2(&self, key: &str, l1: L1Stale<V>) -> Result<Lookup<V>> {
        let now = self.now_ms();
        let (mut stale, stale_fresh_until) = match l1.0 {
            Some((value, fresh_until)) => (Some(value), fresh_until),
            None => (None, 0),
        };
        if let Some(l2) = self.l2_available() {
            match l2.get(&self.inner.namespace, key).await {
                Ok(Some(bytes)) => match self.decode(&bytes) {
                    Ok((fresh_until, value)) if now < fresh_until => {
                        self.inner.stats.l2(true);
                        self.fill_l1_from(key, &value, fresh_until, now);
                        return Ok(Lookup::Fresh {
                            value,
                            refresh_due: false,
                        });
                    }
                    Ok((fresh_until, value)) => {
                        self.inner.stats.l2(false);
                        if fresh_until > stale_fresh_until {
                            stale = Some(value);
                        }
                    }
                    Err(error) => {
                        self.inner.stats.l2(false);
                        tracing::warn!(cache = %self.inner.config.name, key, %error, "unreadable entry in redis treated as a miss");
                    }
                },
                Ok(None) => self.inner.stats.l2(false),
                Err(error) => self.l2_failed(error)?,
            }
        }
        if !self.inner.config.fail_safe.enabled {
            stale = None;
        }
        Ok(Lookup::Miss { stale })
    }

    pub(super) fn decode(&self, bytes: &[u8]) -> Result<(u64, Option<V>)> {
        let frame = unframe(bytes, self.inner.config.max_payload_bytes)?;
        let value = match frame.payload {
            Some(payload) => Some(self.inner.codec.decode(&payload)?),
            None => None,
        };
        Ok((frame.fresh_until_ms, value))
    }
}

#[cfg(test)]
mod tests {
    use super::super::l1::MANUAL_READS;
    use crate::{Cache, CacheConfig, EntryOptions, HybridCache};
    use neo_core::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    /// L1 reads a call makes on this thread (counting from before it is made: `get_or_load`
    /// reads L1 as it is called).
    async fn reads<T, F: Future<Output = T>>(call: impl FnOnce() -> F) -> (T, usize) {
        let before = MANUAL_READS.with(std::cell::Cell::get);
        let out = call().await;
        (out, MANUAL_READS.with(std::cell::Cell::get) - before)
    }

    #[test]
    fn a_miss_reads_l1_once_and_still_serves_the_stale_value() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
            let config = CacheConfig {
                ttl: Duration::from_secs(10),
                ttl_jitter: 0.0,
                ..CacheConfig::named("reads")
            };
            let cache =
                HybridCache::<u32>::in_memory(config, Arc::new(clock.clone())).expect("a cache");
            cache
                .set("k", 1, &EntryOptions::default())
                .await
                .expect("set");
            let (hit, n) = reads(|| cache.get("k")).await;
            assert_eq!((hit.expect("get"), n), (Some(1), 1));

            clock.advance(Duration::from_secs(11));
            let (miss, n) = reads(|| cache.get("k")).await;
            assert_eq!((miss.expect("get"), n), (None, 1), "get after expiry");
            let (loaded, n) = reads(|| {
                cache.get_or_load("k", || async {
                    Err::<Option<u32>, _>(std::io::Error::other("down"))
                })
            })
            .await;
            // The failed load falls back on the stale L1 value the single read found.
            assert_eq!(
                (loaded.expect("stale value"), n),
                (Some(1), 1),
                "get_or_load"
            );
            let (missing, n) = reads(|| cache.get("absent")).await;
            assert_eq!((missing.expect("get"), n), (None, 1), "absent key");
            let stats = cache.stats();
            assert_eq!((stats.l1_hits, stats.l1_misses), (1, 3));
        });
    }
}
