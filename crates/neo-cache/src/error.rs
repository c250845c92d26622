//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};
use std::sync::Arc;
use std::time::Duration;

/// Result alias for neo-cache.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loader's own error, shared by every caller that waited on the same load.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in neo-cache. Cheap to clone: one load's outcome is handed to
/// every caller that was coalesced onto it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader failed and no usable stale value existed.
    #[error("loading {key:?} failed: {source}")]
    Loader {
        /// The cache key being loaded.
        key: String,
        /// The loader's error.
        #[source]
        source: Arc<BoxError>,
    },

    /// The loader did not finish within the hard timeout and no stale value existed.
    #[error("loading {key:?} took longer than {after:?}")]
    LoaderTimeout {
        /// The cache key being loaded.
        key: String,
        /// The hard timeout.
        after: Duration,
    },

    /// Redis (L2) failed and the cache is configured to report it
    /// (`fail_on_l2_error`), or a Redis-only operation could not run.
    #[error("redis (L2) is unavailable: {0}")]
    Unavailable(String),

    /// A value could not be encoded or a stored value decoded.
    #[error("codec: {0}")]
    Codec(String),

    /// The encoded value is larger than `max_payload_bytes`; nothing was stored.
    #[error("value for {key:?} is {size} bytes encoded, more than max_payload_bytes ({max})")]
    PayloadTooLarge {
        /// The cache key.
        key: String,
        /// Encoded (and compressed) size.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// A key, tag, pattern or option was rejected before anything was sent.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// Configuration is inconsistent or incomplete.
    #[error("cache configuration: {0}")]
    Config(String),

    /// The cache was shut down.
    #[error("the cache was shut down")]
    Shutdown,

    /// A tenant view was asked for outside a tenant scope (see
    /// [`HybridCache::for_current_tenant`](crate::HybridCache::for_current_tenant)).
    #[error(transparent)]
    Tenant(#[from] neo_tenant::Error),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// neo-core's refusal of an input (a name, a tag) as this crate's [`Error::Invalid`].
    pub(crate) fn rejected(error: neo_core::Error) -> Self {
        match error {
            neo_core::Error::Invalid { what, reason } => Error::Invalid { what, reason },
            other => Error::invalid("input", other.to_string()),
        }
    }

    pub(crate) fn redis(error: &redis::RedisError) -> Self {
        Error::Unavailable(error.to_string())
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Loader { .. } => ErrorKind::Internal,
            Error::LoaderTimeout { .. } => ErrorKind::Timeout,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Codec(_) => ErrorKind::Internal,
            Error::PayloadTooLarge { .. } | Error::Invalid { .. } => ErrorKind::Validation,
            Error::Config(_) => ErrorKind::Configuration,
            Error::Shutdown => ErrorKind::Shutdown,
            Error::Tenant(error) => error.kind(),
        }
    }
}

impl From<neo_core::Error> for Error {
    fn from(error: neo_core::Error) -> Self {
        Error::Config(error.to_string())
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
