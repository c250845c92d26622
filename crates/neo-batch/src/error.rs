//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};
use std::sync::Arc;

/// A batch function's own error, shared by every caller whose item was in that batch.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in neo-batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The batch function failed; every item of that batch gets this error.
    #[error("batch of {size} failed: {source}")]
    Batch {
        /// Items in the failed batch.
        size: usize,
        /// The batch function's error.
        #[source]
        source: Arc<BoxError>,
        /// Its classification, when the batch function's error had one.
        kind: ErrorKind,
    },

    /// The batcher or loader was shut down before the item was handled.
    #[error("the batcher was shut down")]
    Shutdown,

    /// The settings are inconsistent (zero sizes, ...).
    #[error("batch configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn batch<E>(size: usize, error: E) -> Self
    where
        E: Into<BoxError> + HasErrorKind,
    {
        let kind = error.kind();
        Error::Batch {
            size,
            source: Arc::new(error.into()),
            kind,
        }
    }
}

impl Error {
    /// The outcome of a batch call run under a retry-only policy.
    pub(crate) fn from_policy<E>(size: usize, error: neo_resilience::Error<E>) -> Self
    where
        E: Into<BoxError> + HasErrorKind,
    {
        match error.into_inner() {
            Some(source) => Error::batch(size, source),
            // The batch policies have no breaker, limiter, bulkhead or timeout.
            None => Error::Config("the batch call was refused by its policy".into()),
        }
    }
}

/// A policy that only retries (no breaker, limiter, bulkhead or timeout): how batch calls are
/// retried. `None` runs each call once.
pub(crate) fn retry_only(
    retry: Option<neo_resilience::RetryConfig>,
    name: &str,
) -> Result<neo_resilience::Policy, Error> {
    neo_resilience::Policy::new(&neo_resilience::ResilienceConfig {
        retry: Some(retry.unwrap_or(neo_resilience::RetryConfig {
            max_attempts: 1,
            ..neo_resilience::RetryConfig::default()
        })),
        breaker: None,
        timeout: None,
        ..neo_resilience::ResilienceConfig::named(name)
    })
    .map_err(|e| Error::Config(e.to_string()))
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Batch { kind, .. } => *kind,
            Error::Shutdown => ErrorKind::Shutdown,
            Error::Config(_) => ErrorKind::Configuration,
        }
    }
}
