//! Rate limits (governor's GCRA) and bulkheads (bounded concurrency with a bounded queue).

use crate::{Error, Refusal};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A rate: `per_second` calls on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Sustained calls per second.
    pub per_second: u32,
    /// Calls allowed at once after a quiet period.
    pub burst: u32,
    /// How long [`RateLimiter::acquire`] may wait for a slot before refusing.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 100,
            burst: 100,
            max_wait: Duration::ZERO,
        }
    }
}

impl RateLimitConfig {
    fn quota(&self) -> Result<Quota, Refusal> {
        let per_second = NonZeroU32::new(self.per_second)
            .ok_or_else(|| Error::Config("rate_limit.per_second must be at least 1".into()))?;
        let burst = NonZeroU32::new(self.burst)
            .ok_or_else(|| Error::Config("rate_limit.burst must be at least 1".into()))?;
        Ok(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// A process-wide rate limit (GCRA, from governor); cheap to clone.
///
/// # Example
/// ```
/// use neo_resilience::{RateLimitConfig, RateLimiter};
/// let limiter = RateLimiter::new(RateLimitConfig { per_second: 10, burst: 2, ..Default::default() }).unwrap();
/// assert!(limiter.try_acquire().is_ok());
/// assert!(limiter.try_acquire().is_ok());
/// assert!(limiter.try_acquire().is_err()); // the burst is spent
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limiter: Arc<DefaultDirectRateLimiter>,
    max_wait: Duration,
}

impl RateLimiter {
    /// A limiter with `config`'s rate.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero rate or burst.
    pub fn new(config: RateLimitConfig) -> Result<Self, Refusal> {
        Ok(RateLimiter {
            limiter: Arc::new(governor::RateLimiter::direct(config.quota()?)),
            max_wait: config.max_wait,
        })
    }

    /// Takes a slot now.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until the next slot.
    pub fn try_acquire(&self) -> Result<(), Refusal> {
        self.limiter.check().map_err(|not_until| {
            metrics::counter!(crate::metric_names::RATE_LIMITED_TOTAL).increment(1);
            Error::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
        })
    }

    /// Takes a slot, waiting up to `max_wait` for one.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when the next slot is further away than `max_wait`.
    pub async fn acquire(&self) -> Result<(), Refusal> {
        match self.try_acquire() {
            Err(Error::RateLimited { retry_after }) if retry_after <= self.max_wait => {
                tokio::time::sleep(retry_after).await;
                self.try_acquire()
            }
            other => other,
        }
    }
}

/// A rate limit per key (tenant, user, endpoint), each key with the same quota.
#[derive(Debug, Clone)]
pub struct KeyedRateLimiter<K: Hash + Eq + Clone> {
    limiter: Arc<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A limiter giving each key `config`'s rate.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero rate or burst.
    pub fn new(config: RateLimitConfig) -> Result<Self, Refusal> {
        Ok(KeyedRateLimiter {
            limiter: Arc::new(governor::RateLimiter::keyed(config.quota()?)),
        })
    }

    /// Takes a slot for `key` now.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until `key`'s next slot.
    pub fn try_acquire(&self, key: &K) -> Result<(), Refusal> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Forgets keys whose limit is back to full (call now and then with many keys).
    pub fn shrink(&self) {
        self.limiter.retain_recent();
    }
}

/// Bulkhead settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BulkheadConfig {
    /// Calls running at once.
    pub max_concurrent: usize,
    /// Calls allowed to wait for a slot; more are refused at once.
    pub max_queued: usize,
    /// How long a queued call waits before it is refused.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 32,
            max_queued: 64,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Bounded concurrency with a bounded wait queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    name: Arc<str>,
    config: BulkheadConfig,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

/// A running call's slot; freed on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// A bulkhead with `config`'s limits.
    ///
    /// # Errors
    /// [`Error::Config`] when `max_concurrent` is zero.
    pub fn new(name: impl Into<String>, config: BulkheadConfig) -> Result<Self, Refusal> {
        if config.max_concurrent == 0 {
            return Err(Error::Config(
                "bulkhead.max_concurrent must be at least 1".into(),
            ));
        }
        Ok(Bulkhead {
            name: Arc::from(name.into()),
            config,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn full(&self) -> Refusal {
        metrics::counter!(crate::metric_names::BULKHEAD_REJECTIONS_TOTAL, "bulkhead" => self.name.to_string())
            .increment(1);
        Error::BulkheadFull {
            name: self.name.to_string(),
            max_concurrent: self.config.max_concurrent,
            max_queued: self.config.max_queued,
        }
    }

    /// Takes a slot, queueing (within `max_queued` and `max_wait`) when all are busy.
    ///
    /// # Errors
    /// [`Error::BulkheadFull`] when the queue is full or the wait timed out.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Refusal> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: permit });
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.config.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(self.full());
        }
        let waited = tokio::time::timeout(
            self.config.max_wait,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Ok(BulkheadPermit { _permit: permit }),
            _ => Err(self.full()),
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}
