//! Everything around one call: retry ∘ rate limit ∘ bulkhead ∘ breaker ∘ timeout.

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::limiter::{Bulkhead, BulkheadConfig, RateLimitConfig, RateLimiter};
use crate::retry::{RetryConfig, RetryDecision, RetryState, retry_if_retryable};
use crate::{Error, Refusal};
use neo_core::HasErrorKind;
use serde::Deserialize;
use std::time::Duration;

/// The settings of a [`Policy`]; each part is optional. Load from `NEO_RESILIENCE_*` with
/// [`ResilienceConfig::from_env`] (feature `env`), e.g. `NEO_RESILIENCE_TIMEOUT=2s`,
/// `NEO_RESILIENCE_RETRY__MAX_ATTEMPTS=5`, `NEO_RESILIENCE_BREAKER__OPEN_FOR=10s`,
/// `NEO_RESILIENCE_RATE_LIMIT__PER_SECOND=50`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ResilienceConfig {
    /// Name of the breaker and bulkhead (in errors, logs and metrics).
    pub name: String,
    /// Limit of each attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retrying failed attempts.
    pub retry: Option<RetryConfig>,
    /// Failing fast while the dependency is down.
    pub breaker: Option<BreakerConfig>,
    /// Calls per second.
    pub rate_limit: Option<RateLimitConfig>,
    /// Calls at once.
    pub bulkhead: Option<BulkheadConfig>,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            name: "default".to_owned(),
            timeout: Some(Duration::from_secs(10)),
            retry: Some(RetryConfig::default()),
            breaker: Some(BreakerConfig::default()),
            rate_limit: None,
            bulkhead: None,
        }
    }
}

impl ResilienceConfig {
    /// The defaults under another name.
    pub fn named(name: impl Into<String>) -> Self {
        ResilienceConfig {
            name: name.into(),
            ..ResilienceConfig::default()
        }
    }

    /// Loads the configuration from `NEO_RESILIENCE_*` environment variables over the
    /// defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> Result<Self, Refusal> {
        neo_core::config::from_env("NEO_RESILIENCE_").map_err(|e| Error::Config(e.to_string()))
    }
}

/// Retry, rate limit, bulkhead, circuit breaker and timeout around one call; cheap to clone
/// (clones share the breaker, limiter and bulkhead).
///
/// Each attempt takes a rate-limit slot, a bulkhead slot and a breaker permit, then runs with
/// the timeout; a failed attempt is retried with backoff while its error is retryable and
/// the budget lasts.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neo_resilience::{Policy, ResilienceConfig};
/// let policy = Policy::new(&ResilienceConfig::named("billing-api")).unwrap();
/// let total = policy
///     .call(|| async { Ok::<_, neo_core::Error>(40 + 2) })
///     .await
///     .unwrap();
/// assert_eq!(total, 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    timeout: Option<Duration>,
    retry: RetryConfig,
    breaker: Option<CircuitBreaker>,
    rate_limiter: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
}

impl Policy {
    /// Builds every part `config` names.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    pub fn new(config: &ResilienceConfig) -> Result<Self, Refusal> {
        let retry = config.retry.unwrap_or(RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        });
        retry.validate()?;
        if config.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config("timeout must be positive".into()));
        }
        Ok(Policy {
            timeout: config.timeout,
            retry,
            breaker: config
                .breaker
                .map(|b| CircuitBreaker::new(config.name.clone(), b))
                .transpose()?,
            rate_limiter: config.rate_limit.map(RateLimiter::new).transpose()?,
            bulkhead: config
                .bulkhead
                .map(|b| Bulkhead::new(config.name.clone(), b))
                .transpose()?,
        })
    }

    /// Uses `breaker` (e.g. one shared by several policies for the same dependency).
    #[must_use]
    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Uses `limiter`.
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// Uses `bulkhead`.
    #[must_use]
    pub fn with_bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// The breaker, if the policy has one.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// Runs `op` under the policy, retrying errors whose kind is retryable.
    ///
    /// # Errors
    /// [`Error::Inner`] with the last error and the attempts made, or the refusal that
    /// stopped the call (open breaker, rate limit, full bulkhead, timeout).
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        E: HasErrorKind,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(retry_if_retryable::<E>, op).await
    }

    /// As [`Self::call`], with `decide` choosing which errors are retried and how soon
    /// (return [`RetryDecision::RetryAfter`] to honour a server's `Retry-After`).
    ///
    /// # Errors
    /// As [`Self::call`].
    pub async fn call_with<T, E, F, Fut, D>(&self, decide: D, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        D: Fn(&E) -> RetryDecision,
    {
        let mut state = RetryState::new(&self.retry);
        loop {
            let error = match self.attempt(&mut op).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match state.next_wait(&self.retry, &error, &decide) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(state.give_up(error)),
            }
        }
    }

    async fn attempt<T, E, F, Fut>(&self, op: &mut F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(limiter) = &self.rate_limiter {
            limiter.acquire().await.map_err(Error::refusal)?;
        }
        let _slot = match &self.bulkhead {
            Some(bulkhead) => Some(bulkhead.acquire().await.map_err(Error::refusal)?),
            None => None,
        };
        let permit = match &self.breaker {
            Some(breaker) => Some(breaker.try_acquire().map_err(Error::refusal)?),
            None => None,
        };
        let outcome = match self.timeout {
            Some(after) => match tokio::time::timeout(after, op()).await {
                Ok(result) => result.map_err(|source| Error::Inner {
                    source,
                    attempts: 1,
                }),
                Err(_) => Err(Error::Timeout { after }),
            },
            None => op().await.map_err(|source| Error::Inner {
                source,
                attempts: 1,
            }),
        };
        if let Some(permit) = permit {
            permit.record(outcome.is_ok());
        }
        outcome
    }
}
