//! A distributed rate limit: GCRA in one Lua script.

use crate::{Coordinator, Error, Result};
use std::sync::LazyLock;
use std::time::Duration;

/// GCRA on the server's clock. KEYS[1] = the key; ARGV = emission interval (µs), tolerance
/// (µs). Returns {allowed, retry_after_µs}.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local t = redis.call('TIME') \
         local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
         local emission = tonumber(ARGV[1]) \
         local tolerance = tonumber(ARGV[2]) \
         local tat = tonumber(redis.call('GET', KEYS[1]) or now) \
         if tat < now then tat = now end \
         local new_tat = tat + emission \
         local allow_at = new_tat - tolerance \
         if allow_at > now then return {0, allow_at - now} end \
         redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1) \
         return {1, 0}",
    )
});

/// A rate limit shared by every process using the same Redis and name, per key.
///
/// # Example
/// ```no_run
/// # async fn demo(coord: neo_coord::Coordinator) -> neo_coord::Result<()> {
/// let limiter = coord.rate_limiter("api", 100, 20)?; // 100/s per tenant, bursts of 20
/// limiter.check("tenant-7").await?; // Err(RateLimited { retry_after }) when over
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DistributedRateLimiter {
    coord: Coordinator,
    name: String,
    emission_us: u64,
    tolerance_us: u64,
}

impl Coordinator {
    /// A limit of `per_second` calls per key with bursts of up to `burst`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a zero rate or burst.
    pub fn rate_limiter(
        &self,
        name: &str,
        per_second: u32,
        burst: u32,
    ) -> Result<DistributedRateLimiter> {
        crate::validate_name(name)?;
        if per_second == 0 || burst == 0 {
            return Err(Error::Invalid {
                what: "rate limit",
                reason: "per_second and burst must be at least 1".into(),
            });
        }
        let emission_us = 1_000_000 / u64::from(per_second);
        Ok(DistributedRateLimiter {
            coord: self.clone(),
            name: name.to_owned(),
            emission_us,
            tolerance_us: emission_us * u64::from(burst),
        })
    }
}

impl DistributedRateLimiter {
    /// Takes a slot for `key`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait; [`Error::Unavailable`]; [`Error::Invalid`].
    pub async fn check(&self, key: &str) -> Result<()> {
        let redis_key = self.coord.key("rate", &format!("{}:{key}", self.name))?;
        let (allowed, retry_us): (i64, i64) = self
            .coord
            .script(
                &GCRA,
                &[&redis_key],
                &[
                    &self.emission_us.to_string(),
                    &self.tolerance_us.to_string(),
                ],
            )
            .await?;
        if allowed == 1 {
            Ok(())
        } else {
            metrics::counter!(crate::metric_names::RATE_LIMITED_TOTAL).increment(1);
            Err(Error::RateLimited {
                retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
            })
        }
    }
}
