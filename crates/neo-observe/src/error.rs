//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};

/// Everything that can go wrong in neo-observe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting was rejected.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The database failed.
    #[error(transparent)]
    Db(#[from] neo_db::Error),

    /// The Prometheus recorder could not be built or installed (one global recorder per
    /// process).
    #[cfg(feature = "prometheus")]
    #[error("prometheus recorder: {0}")]
    Recorder(String),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Db(error.into())
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } => ErrorKind::Validation,
            Error::Db(e) => e.kind(),
            #[cfg(feature = "prometheus")]
            Error::Recorder(_) => ErrorKind::Internal,
        }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
