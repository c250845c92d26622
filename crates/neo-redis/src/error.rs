//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};

/// Result alias for neo-redis.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in neo-redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (e.g. the URL does not parse; its text, which may hold
    /// a password, is not repeated).
    #[error("redis configuration: {0}")]
    Config(String),

    /// A connection could not be set up.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Configuration,
            Error::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}
