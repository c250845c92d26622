//! [`HybridCache`] itself: what every configuration shares, and the small helpers every part
//! of the engine uses (the time, whether Redis is usable, key names, backplane messages).
//! The engine's behaviour is spread over the sibling modules by concern.

use super::admission::Doorkeeper;
use super::clock::{clock_now_ms, system_now_ms};
use super::l1::{L1, lock};
use super::l2::RedisTier;
use crate::codec::Codec;
use crate::config::CacheConfig;
use crate::stats::Stats;
use crate::{Error, Result};
use neo_core::Clock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

/// One load in flight: every caller coalesced onto it waits on the same cell.
pub(super) type Flight<V> = Arc<OnceCell<Result<Option<V>>>>;

pub(super) struct Inner<V> {
    pub(super) config: CacheConfig,
    /// `{key_prefix}{name}:`
    pub(super) namespace: String,
    pub(super) channel: String,
    pub(super) l1: Option<L1<V>>,
    /// Which keys read from Redis enter L1 once it is full (with a moka L1).
    pub(super) doorkeeper: Option<Doorkeeper>,
    pub(super) l2: Option<RedisTier>,
    pub(super) codec: Arc<dyn Codec<V>>,
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) flights: Mutex<HashMap<String, Flight<V>>>,
    pub(super) stats: Stats,
    /// Bumped when the backplane loses Redis: L1 entries of older epochs are not fresh.
    pub(super) epoch: AtomicU64,
    /// Redis is skipped until this time (ms) after an error.
    pub(super) l2_down_until_ms: AtomicU64,
    pub(super) instance: String,
    /// Backplane messages this instance published whose echo has not come back yet. While
    /// any is out, another instance's value message may have been sent before one of ours
    /// (and be older than what we wrote), so it only evicts.
    pub(super) own_in_flight: AtomicU64,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) backplane: Mutex<Option<JoinHandle<()>>>,
    pub(super) backplane_connected: watch::Sender<u64>,
}

/// A typed, named cache: moka in process (L1), Redis shared (L2), or both.
///
/// Cheap to clone; all clones share the tiers, the in-flight loads and the statistics. Call
/// [`shutdown`](HybridCache::shutdown) to stop the backplane task.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> neo_cache::Result<()> {
/// use neo_cache::{Cache, CacheConfig, HybridCache};
/// let cache = HybridCache::<String>::memory(CacheConfig::named("greetings"))?;
/// let value = cache
///     .get_or_load("en", || async { Ok::<_, std::io::Error>(Some("hello".to_owned())) })
///     .await?;
/// assert_eq!(value.as_deref(), Some("hello"));
/// assert_eq!(cache.get("en").await?.as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
pub struct HybridCache<V> {
    pub(super) inner: Arc<Inner<V>>,
}

impl<V> Clone for HybridCache<V> {
    fn clone(&self) -> Self {
        HybridCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for HybridCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCache")
            .field("name", &self.inner.config.name)
            .field("l1", &self.inner.l1.is_some())
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

impl<V> Drop for Inner<V> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.backplane).take() {
            task.abort();
        }
    }
}
impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    #[inline]
    pub(super) fn now_ms(&self) -> u64 {
        match &self.inner.clock {
            None => system_now_ms(),
            Some(clock) => clock_now_ms(clock.as_ref()),
        }
    }

    pub(super) fn l2_available(&self) -> Option<&RedisTier> {
        let tier = self.inner.l2.as_ref()?;
        (self.inner.l2_down_until_ms.load(Ordering::Relaxed) <= system_now_ms()).then_some(tier)
    }

    /// Records a Redis failure; returns the error when callers should see it.
    pub(super) fn l2_failed(&self, error: Error) -> Result<()> {
        self.inner.stats.l2_error();
        let retry = self.inner.config.l2.retry_after;
        self.inner.l2_down_until_ms.store(
            system_now_ms() + u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tracing::warn!(cache = %self.inner.config.name, error = %error, "redis (L2) failed; carrying on without it");
        if self.inner.config.l2.fail_on_error {
            Err(error)
        } else {
            Ok(())
        }
    }

    pub(super) fn redis_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.inner.namespace.len() + key.len());
        full.push_str(&self.inner.namespace);
        full.push_str(key);
        full
    }

    pub(super) fn tag_key(&self, tag: &str) -> String {
        format!(
            "{}{}#tag:{tag}",
            self.inner.config.key_prefix, self.inner.config.name
        )
    }

    pub(super) fn lock_key(&self, key: &str) -> String {
        format!(
            "{}{}#lock:{key}",
            self.inner.config.key_prefix, self.inner.config.name
        )
    }

    pub(super) fn publishes(&self) -> bool {
        self.inner.l1.is_some() && self.inner.config.backplane.enabled
    }

    /// A backplane message: `{instance}\n{kind}\n{payload}`.
    pub(super) fn message(&self, kind: char, payload: &[u8]) -> Vec<u8> {
        let instance = self.inner.instance.as_bytes();
        let mut message = Vec::with_capacity(instance.len() + 3 + payload.len());
        message.extend_from_slice(instance);
        message.push(b'\n');
        let mut kind_byte = [0_u8; 4];
        message.extend_from_slice(kind.encode_utf8(&mut kind_byte).as_bytes());
        message.push(b'\n');
        message.extend_from_slice(payload);
        message
    }

    /// The channel and `message` to publish when this cache publishes, counted as in flight
    /// until its echo comes back (see [`Inner::own_in_flight`]). A publish that fails stays
    /// counted: it may have reached Redis, and counting too many only makes value messages
    /// evict, while too few could let an older value in (the count restarts with each
    /// backplane connection).
    pub(super) fn announce<'a>(&'a self, message: &'a [u8]) -> Option<(&'a str, &'a [u8])> {
        if !self.publishes() {
            return None;
        }
        self.inner.own_in_flight.fetch_add(1, Ordering::Relaxed);
        Some((self.inner.channel.as_str(), message))
    }
}
