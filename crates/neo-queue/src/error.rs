//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};

/// Everything that can go wrong in neo-queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job or setting was rejected before anything was written.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The worker's lease on these jobs expired (or the jobs were finished elsewhere): its
    /// ack, nack or heartbeat was refused. Another worker may be running them now.
    #[error("lease lost on {} job(s); another claim owns them now: {ids:?}", .ids.len())]
    LeaseLost {
        /// The refused jobs.
        ids: Vec<neo_core::JobId>,
    },

    /// A cron expression of a periodic job's [`Schedule`](crate::Schedule) was refused:
    /// `field` names the part that is wrong.
    #[error("invalid cron expression {expression:?}, {field} field: {reason}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// The field at fault ([`CronField::Expression`](crate::CronField::Expression) for
        /// the expression as a whole).
        field: crate::CronField,
        /// What was wrong, as croner says it.
        reason: String,
    },

    /// A job with the same unique key is already pending or running.
    #[error("a job with unique key {key:?} is already queued")]
    Duplicate {
        /// The unique key.
        key: String,
    },

    /// A job depends on jobs the queue does not hold (never enqueued, another tenant's, or
    /// already completed and so gone): nothing of the call was enqueued.
    #[error("unknown dependencies (not queued, or already completed): {ids:?}")]
    UnknownDependency {
        /// The dependencies not found.
        ids: Vec<neo_core::JobId>,
    },

    /// The jobs of one enqueue depend on each other in a cycle (or a job on itself): none
    /// of them could ever run, so nothing of the call was enqueued.
    #[error("dependency cycle among the enqueued jobs: {ids:?}")]
    DependencyCycle {
        /// The jobs on the cycle, in dependency order.
        ids: Vec<neo_core::JobId>,
    },

    /// A tenant-scoped call of a tenant-isolated queue had no tenant to act for (neither
    /// [`Queue::for_tenant`](crate::Queue::for_tenant) nor `neo_tenant::scope`): refused before
    /// any query (fail closed).
    #[error(transparent)]
    Tenant(#[from] neo_tenant::Error),

    /// The database failed.
    #[error(transparent)]
    Db(#[from] neo_db::Error),
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
            Error::Invalid { .. }
            | Error::Cron { .. }
            | Error::UnknownDependency { .. }
            | Error::DependencyCycle { .. } => ErrorKind::Validation,
            Error::LeaseLost { .. } => ErrorKind::Conflict,
            Error::Duplicate { .. } => ErrorKind::AlreadyExists,
            Error::Tenant(e) => e.kind(),
            Error::Db(e) => e.kind(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Error::Db(e) => e.is_retryable(),
            other => other.kind().is_retryable(),
        }
    }
}

/// Result alias for neo-queue.
pub type Result<T, E = Error> = std::result::Result<T, E>;
