//! Resilience for any async call: retry with backoff and jitter, circuit breaker, rate limiter
//! (governor, per key too), bulkhead and timeouts, each usable alone and all composable in a
//! [`Policy`] configured from [`ResilienceConfig`] (`NEO_RESILIENCE_*`).
//!
//! In-process only: limits and breaker state are per process (neo-coord has the distributed
//! rate limiter).
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use neo_resilience::{Policy, ResilienceConfig, RetryConfig};
//! use std::time::Duration;
//! let policy = Policy::new(&ResilienceConfig {
//!     timeout: Some(Duration::from_secs(2)),
//!     retry: Some(RetryConfig { max_attempts: 4, ..RetryConfig::default() }),
//!     ..ResilienceConfig::named("search-api")
//! })
//! .unwrap();
//! let result = policy.call(|| async { Ok::<_, neo_core::Error>("found") }).await;
//! assert_eq!(result.unwrap(), "found");
//! # }
//! ```
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | `ResilienceConfig::from_env()` (reads `NEO_RESILIENCE_*`) |

mod breaker;
mod error;
mod limiter;
pub mod metric_names;
mod policy;
mod retry;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit, StateChange};
pub use error::{Error, NoCall, Refusal};
pub use limiter::{
    Bulkhead, BulkheadConfig, BulkheadPermit, KeyedRateLimiter, RateLimitConfig, RateLimiter,
};
pub use policy::{Policy, ResilienceConfig};
pub use retry::{Jitter, RetryConfig, RetryDecision, retry_if_retryable};
