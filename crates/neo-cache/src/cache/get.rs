//! Reads: `get`'s own future (its first poll reads L1), the L1 hit paths, and the lookup
//! through L1 and L2 that a miss runs.

use super::hybrid::HybridCache;
use super::l1::Entry;
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

type MissFuture<V> = Pin<Box<dyn Future<Output = Result<Option<V>>> + Send>>;

/// Builds and boxes the miss future outside `poll`, so the hit path's stack frame does not
/// hold the (large) future while it is built.
#[cold]
#[inline(never)]
fn start_miss<V>(cache: &HybridCache<V>, key: &str) -> MissFuture<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (cache, key) = (cache.clone(), key.to_owned());
    Box::pin(async move { cache.get_miss(&key).await })
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
            let hit = this.cache.l1_poll(this.key);
            if hit.is_ready() {
                return hit;
            }
            this.miss = Some(start_miss(this.cache, this.key));
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
    pub(super) fn l1_hit(&self, key: &str) -> Option<(Entry<V>, u64)> {
        let l1 = self.inner.l1.as_ref()?;
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        let entry = l1.get(key).filter(|entry| entry.is_fresh(now, epoch))?;
        self.inner.stats.l1(true);
        Some((entry, now))
    }

    /// The L1 hit path of `get`: [`l1_hit`](Self::l1_hit) shaped as `get`'s own poll result
    /// (`Pending`: no fresh entry), so that a hit moves the value once, straight into the
    /// caller's result, and the rest of the entry is never copied.
    #[inline(always)]
    pub(super) fn l1_poll(&self, key: &str) -> std::task::Poll<Result<Option<V>>> {
        use std::task::Poll;
        let Some(l1) = self.inner.l1.as_ref() else {
            return Poll::Pending;
        };
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        match l1.get(key) {
            // `tags` stays bound, so it is dropped after the value has moved out.
            Some(Entry {
                value,
                fresh_until_ms,
                epoch: written_in,
                tags: _tags,
                ..
            }) if Entry::<V>::fresh(written_in, fresh_until_ms, now, epoch) => {
                self.inner.stats.l1(true);
                Poll::Ready(Ok(value))
            }
            _ => Poll::Pending,
        }
    }

    /// [`l1_hit`](Self::l1_hit) for `get_or_load`: the value and whether it is due for an
    /// eager refresh.
    #[inline]
    pub(super) fn l1_fresh(&self, key: &str) -> Option<(Option<V>, bool)> {
        let (entry, now) = self.l1_hit(key)?;
        let refresh_due = entry.refresh_due(now, self.inner.config.eager_refresh);
        Some((entry.value, refresh_due))
    }

    /// `get` after an L1 miss. L1 only ever holds valid keys (every write validates), so a
    /// hit needs no check; a miss validates before anything reaches Redis.
    pub(super) async fn get_miss(&self, key: &str) -> Result<Option<V>> {
        validate_key(key)?;
        self.get_slow(key).await
    }

    pub(super) async fn get_slow(&self, key: &str) -> Result<Option<V>> {
        match self.lookup(key).await? {
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

    pub(super) async fn lookup(&self, key: &str) -> Result<Lookup<V>> {
        let now = self.now_ms();
        let mut stale: Option<Option<V>> = None;
        let mut stale_fresh_until = 0;
        if let Some(l1) = &self.inner.l1 {
            if let Some(entry) = l1.get(key) {
                if entry.is_fresh(now, self.inner.epoch.load(Ordering::Relaxed)) {
                    self.inner.stats.l1(true);
                    return Ok(Lookup::Fresh {
                        value: entry.value.clone(),
                        refresh_due: entry.refresh_due(now, self.inner.config.eager_refresh),
                    });
                }
                if now < entry.stale_until_ms {
                    stale = Some(entry.value.clone());
                    stale_fresh_until = entry.fresh_until_ms;
                }
            }
            self.inner.stats.l1(false);
        }
        if let Some(l2) = self.l2_available() {
            match l2.get(&self.redis_key(key)).await {
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
