//! The crate's error type: the call's own error, or why the policy did not (or no longer) run it.

use neo_core::{ErrorKind, HasErrorKind};
use std::time::Duration;

/// What a guarded call returns on failure.
///
/// `E` is the call's own error; every other variant is the policy refusing or giving up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The call ran and failed (after the retries the policy allowed).
    #[error("{source}")]
    Inner {
        /// The call's error (the last one, when retried).
        source: E,
        /// How many times the call ran.
        attempts: u32,
    },

    /// The circuit breaker is open: the call was not made.
    #[error("circuit breaker {name:?} is open; retry after {retry_after:?}")]
    Open {
        /// The breaker's name.
        name: String,
        /// Until it lets a probe through.
        retry_after: Duration,
    },

    /// An attempt did not finish in time.
    #[error("the call did not finish within {after:?}")]
    Timeout {
        /// The per-attempt timeout.
        after: Duration,
    },

    /// The rate limit allows no call now.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// When a call would be allowed.
        retry_after: Duration,
    },

    /// The bulkhead is full and its wait queue too (or the wait timed out).
    #[error("bulkhead {name:?} is full ({max_concurrent} running, {max_queued} waiting)")]
    BulkheadFull {
        /// The bulkhead's name.
        name: String,
        /// Calls allowed at once.
        max_concurrent: usize,
        /// Calls allowed to wait.
        max_queued: usize,
    },

    /// The configuration is inconsistent.
    #[error("resilience configuration: {0}")]
    Config(String),
}

impl<E> Error<E> {
    /// The call's own error, if the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Turns a refusal error of one call type into another's (the call never ran).
    pub(crate) fn refusal<F>(self) -> Error<F> {
        match self {
            Error::Inner { .. } => Error::Config("an inner error cannot change type".into()),
            Error::Open { name, retry_after } => Error::Open { name, retry_after },
            Error::Timeout { after } => Error::Timeout { after },
            Error::RateLimited { retry_after } => Error::RateLimited { retry_after },
            Error::BulkheadFull {
                name,
                max_concurrent,
                max_queued,
            } => Error::BulkheadFull {
                name,
                max_concurrent,
                max_queued,
            },
            Error::Config(message) => Error::Config(message),
        }
    }

    /// A server's hint of when to come back, for errors that carry one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Open { retry_after, .. } | Error::RateLimited { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The call type of errors that never come from a call: construction and the refusals of a
/// breaker, limiter or bulkhead used on their own ([`Refusal`]). It has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCall {}

impl std::fmt::Display for NoCall {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoCall {}

impl HasErrorKind for NoCall {
    fn kind(&self) -> ErrorKind {
        match *self {}
    }
}

/// An error that did not come from a call: bad settings, an open breaker, a spent rate
/// limit, a full bulkhead.
pub type Refusal = Error<NoCall>;

impl<E: HasErrorKind> HasErrorKind for Error<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Inner { source, .. } => source.kind(),
            Error::Open { .. } | Error::BulkheadFull { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Config(_) => ErrorKind::Configuration,
        }
    }
}
