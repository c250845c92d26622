//! Locks with fencing tokens and automatic extension.

use crate::{Coordinator, Error, Result, millis};
use rand::RngExt;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `SET NX PX`, and on success the next fencing token (`INCR`), atomically: on one server,
/// whose counter lives as long as its data.
pub(crate) static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
           return redis.call('INCR', KEYS[2]) \
         end \
         return 0",
    )
});

/// As [`ACQUIRE`], with the token raised to at least the master's clock in microseconds
/// (`TIME`), so that it stays higher than one a failover lost along with the counter (see
/// the crate docs): for a Redis Cluster or Sentinel, where failovers are part of the setup.
pub(crate) static ACQUIRE_AFTER_FAILOVER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
           local fence = redis.call('INCR', KEYS[2]) \
           local t = redis.call('TIME') \
           local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
           if fence < now then \
             fence = now \
             redis.call('SET', KEYS[2], string.format('%d', now)) \
           end \
           return fence \
         end \
         return 0",
    )
});

/// Deletes the key only if it still holds our token.
pub(crate) static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// Extends the key only if it still holds our token.
pub(crate) static EXTEND: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// A held lock. It is extended every third of `lock_ttl` while the guard lives; release it
/// with [`release`](LockGuard::release) (dropping it releases in the background).
#[derive(Debug)]
pub struct LockGuard {
    coord: Coordinator,
    name: String,
    key: String,
    token: String,
    fence: u64,
    held: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// This acquisition's fencing token: higher than every earlier one for this lock, on a
    /// Redis Cluster or Sentinel also across a failover that lost the last grants (see the
    /// crate docs for the clock it relies on then).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lock is still ours as far as the last extension knows.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Extends the lock to a full `lock_ttl` from now (the guard also does this by itself).
    ///
    /// # Errors
    /// [`Error::Lost`] when it already expired or was taken over; [`Error::Unavailable`].
    pub async fn extend(&self) -> Result<()> {
        let ttl = millis(self.coord.shared.config.lock_ttl);
        let extended: i64 = self
            .coord
            .script(&EXTEND, &[&self.key], &[&self.token, &ttl])
            .await?;
        if extended == 1 {
            Ok(())
        } else {
            self.held.store(false, Ordering::SeqCst);
            Err(Error::Lost {
                what: "lock",
                name: self.name.clone(),
            })
        }
    }

    /// Stops the automatic extension and keeps the lock until its TTL runs out (for tests
    /// of what happens when a holder freezes, and for holders that extend it themselves).
    #[must_use]
    pub fn without_extension(mut self) -> Self {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        self
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// [`Error::Lost`] when it had expired or been taken over; [`Error::Unavailable`].
    pub async fn release(mut self) -> Result<()> {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        let key = std::mem::take(&mut self.key);
        let released: i64 = self.coord.script(&RELEASE, &[&key], &[&self.token]).await?;
        if released == 1 {
            Ok(())
        } else {
            Err(Error::Lost {
                what: "lock",
                name: self.name.clone(),
            })
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        if self.key.is_empty() {
            return;
        }
        let (coord, key, token) = (
            self.coord.clone(),
            std::mem::take(&mut self.key),
            self.token.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = coord.script::<i64>(&RELEASE, &[&key], &[&token]).await;
            });
        }
    }
}

impl Coordinator {
    /// Takes `name` if it is free.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Unavailable`].
    pub async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>> {
        let (key, fence_key) = self.key_pair("lock", name, "fence")?;
        let token = uuid::Uuid::now_v7().to_string();
        let ttl = self.shared.config.lock_ttl;
        let fence: u64 = self
            .script(self.acquire(), &[&key, &fence_key], &[&token, &millis(ttl)])
            .await?;
        if fence == 0 {
            return Ok(None);
        }
        metrics::counter!(crate::metric_names::LOCKS_ACQUIRED_TOTAL).increment(1);
        let held = Arc::new(AtomicBool::new(true));
        let watchdog = {
            let (coord, key, token, held) =
                (self.clone(), key.clone(), token.clone(), Arc::clone(&held));
            let name = name.to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match coord
                        .script::<i64>(&EXTEND, &[&key], &[&token, &millis(ttl)])
                        .await
                    {
                        Ok(1) => {}
                        Ok(_) => {
                            held.store(false, Ordering::SeqCst);
                            tracing::warn!(lock = %name, "lock lost: it expired or was taken over");
                            return;
                        }
                        // A failed extension is retried; the TTL covers a short outage.
                        Err(error) => tracing::warn!(lock = %name, %error, "extending lock failed"),
                    }
                }
            })
        };
        Ok(Some(LockGuard {
            coord: self.clone(),
            name: name.to_owned(),
            key,
            token,
            fence,
            held,
            watchdog: Some(watchdog),
        }))
    }

    /// Takes `name`, retrying with jitter for up to `lock_wait`.
    ///
    /// # Errors
    /// [`Error::Busy`] when it stayed taken; [`Error::Unavailable`]; [`Error::Invalid`].
    pub async fn lock(&self, name: &str) -> Result<LockGuard> {
        let started = Instant::now();
        let config = &self.shared.config;
        loop {
            if let Some(guard) = self.try_lock(name).await? {
                return Ok(guard);
            }
            if started.elapsed() >= config.lock_wait {
                return Err(Error::Busy {
                    name: name.to_owned(),
                    waited: started.elapsed(),
                });
            }
            let pause = config
                .lock_retry
                .mul_f64(rand::rng().random_range(0.5..=2.0));
            tokio::time::sleep(
                pause
                    .min(config.lock_wait.saturating_sub(started.elapsed()))
                    .max(Duration::from_millis(1)),
            )
            .await;
        }
    }

    /// Runs `work` with `name` locked, passing the fencing token; releases afterwards.
    ///
    /// # Errors
    /// As [`Self::lock`], or [`Error::Lost`] when the lock was lost while `work` ran (its
    /// result is then discarded: act on the fence in the protected resource).
    pub async fn with_lock<T, F, Fut>(&self, name: &str, work: F) -> Result<T>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.lock(name).await?;
        let value = work(guard.fence()).await;
        guard.release().await?;
        Ok(value)
    }
}
