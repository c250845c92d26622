//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};
use std::time::Duration;

/// Everything that can go wrong in neo-coord.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached or did not answer in time.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),

    /// The lock stayed taken for all of `lock_wait`.
    #[error("lock {name:?} is held by someone else (waited {waited:?})")]
    Busy {
        /// The lock.
        name: String,
        /// How long we tried.
        waited: Duration,
    },

    /// The lock or lease was lost (expired, or taken over) before it was released.
    #[error("{what} {name:?} was lost before it was released")]
    Lost {
        /// `lock` or `leadership`.
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// The rate limit allows no call now.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// When a call would be allowed.
        retry_after: Duration,
    },

    /// A name or setting was rejected before anything was sent.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// The configuration is inconsistent.
    #[error("coordination configuration: {0}")]
    Config(String),
}

impl Error {
    /// neo-core's refusal of an input (a lock, election or limit name) as this crate's
    /// [`Error::Invalid`].
    pub(crate) fn rejected(error: neo_core::Error) -> Self {
        match error {
            neo_core::Error::Invalid { what, reason } => Error::Invalid { what, reason },
            other => Error::Invalid {
                what: "input",
                reason: other.to_string(),
            },
        }
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Busy { .. } | Error::Lost { .. } => ErrorKind::Conflict,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Invalid { .. } => ErrorKind::Validation,
            Error::Config(_) => ErrorKind::Configuration,
        }
    }
}

impl From<neo_redis::Error> for Error {
    fn from(error: neo_redis::Error) -> Self {
        match error {
            neo_redis::Error::Config(reason) => Error::Config(reason),
            neo_redis::Error::Unavailable(reason) => Error::Unavailable(reason),
            other if other.kind() == ErrorKind::Configuration => Error::Config(other.to_string()),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

/// Result alias for neo-coord.
pub type Result<T, E = Error> = std::result::Result<T, E>;
