//! Retry with exponential backoff and jitter.

use crate::{Error, Refusal};
use neo_core::HasErrorKind;
use rand::RngExt;
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

/// How the delay between attempts is randomized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `0 ..= delay` (AWS "full jitter"): spreads retries the most.
    #[default]
    Full,
    /// Uniform in `initial ..= previous × 3`, capped (AWS "decorrelated jitter").
    Decorrelated,
}

/// Retry settings. Load from `NEO_RESILIENCE_RETRY__*` through
/// [`ResilienceConfig`](crate::ResilienceConfig).
///
/// # Example
/// ```
/// use neo_resilience::{Jitter, RetryConfig};
/// use std::time::Duration;
/// let retry = RetryConfig {
///     max_attempts: 5,
///     initial_delay: Duration::from_millis(50),
///     jitter: Jitter::Decorrelated,
///     ..RetryConfig::default()
/// };
/// assert!(retry.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts in total, the first included (1 disables retrying).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth of the delay per attempt.
    pub multiplier: f64,
    /// Randomization of the delay.
    pub jitter: Jitter,
    /// Stop retrying when the next attempt would start later than this after the first.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            max_elapsed: None,
        }
    }
}

impl RetryConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<(), Refusal> {
        if self.max_attempts == 0 {
            return Err(Error::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(Error::Config(
                "retry.multiplier must be at least 1.0".into(),
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::Config(
                "retry.initial_delay must not exceed retry.max_delay".into(),
            ));
        }
        Ok(())
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1), given the previous
    /// delay (for decorrelated jitter).
    pub fn delay(&self, attempt: u32, previous: Duration) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self
            .initial_delay
            .mul_f64(self.multiplier.powi(exponent).min(1e9))
            .min(self.max_delay);
        let mut rng = rand::rng();
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(rng.random_range(0.0..=1.0)),
            Jitter::Decorrelated => {
                let low = self.initial_delay;
                let high = previous.max(low).saturating_mul(3).min(self.max_delay);
                if high <= low {
                    low
                } else {
                    low + (high - low).mul_f64(rng.random_range(0.0..=1.0))
                }
            }
        }
    }
}

/// What to do with a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Do not retry: return the error.
    Stop,
    /// Retry after the policy's backoff.
    Retry,
    /// Retry after (at least) this long: the server said so (`Retry-After`).
    RetryAfter(Duration),
}

/// The default decision: retry errors whose [`ErrorKind`](neo_core::ErrorKind) is retryable.
pub fn retry_if_retryable<E: HasErrorKind>(error: &E) -> RetryDecision {
    if error.is_retryable() {
        RetryDecision::Retry
    } else {
        RetryDecision::Stop
    }
}

/// The bookkeeping of one retried call: attempts made, time spent, the last delay.
#[derive(Debug)]
pub(crate) struct RetryState {
    started: Instant,
    previous: Duration,
    attempt: u32,
}

impl RetryState {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        RetryState {
            started: Instant::now(),
            previous: config.initial_delay,
            attempt: 1,
        }
    }

    /// After a failed attempt: how long to wait before the next one, or `None` to give up
    /// (the error is not worth retrying, or the attempts or time are spent).
    pub(crate) fn next_wait<E>(
        &mut self,
        config: &RetryConfig,
        error: &Error<E>,
        decide: &dyn Fn(&E) -> RetryDecision,
    ) -> Option<Duration> {
        let decision = match error {
            Error::Inner { source, .. } => decide(source),
            // The rate limit says when to come back; a timeout is worth another attempt; an
            // open breaker means "fail fast", so it ends the call.
            Error::RateLimited { retry_after } => RetryDecision::RetryAfter(*retry_after),
            Error::Timeout { .. } => RetryDecision::Retry,
            Error::Open { .. } | Error::BulkheadFull { .. } | Error::Config(_) => {
                RetryDecision::Stop
            }
        };
        let wait = match decision {
            RetryDecision::Stop => return None,
            RetryDecision::Retry => config.delay(self.attempt, self.previous),
            RetryDecision::RetryAfter(hint) => hint.max(config.delay(self.attempt, self.previous)),
        };
        let within_budget = self.attempt < config.max_attempts
            && config
                .max_elapsed
                .is_none_or(|max| self.started.elapsed() + wait <= max);
        if !within_budget {
            return None;
        }
        tracing::debug!(
            attempt = self.attempt,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        metrics::counter!(crate::metric_names::RETRIES_TOTAL).increment(1);
        self.previous = wait;
        self.attempt += 1;
        Some(wait)
    }

    /// The error to return after giving up, with the attempts made.
    pub(crate) fn give_up<E>(&self, error: Error<E>) -> Error<E> {
        match error {
            Error::Inner { source, .. } => Error::Inner {
                source,
                attempts: self.attempt,
            },
            other => other,
        }
    }
}
