//! The error vocabulary shared by every neo-commons crate.

use std::fmt;

/// What went wrong, independent of which crate or driver reported it.
///
/// Every crate's `Error` maps onto one `ErrorKind` through [`HasErrorKind`], so a
/// host service can turn any neo-commons error into an HTTP status, a retry
/// decision or a metric label without matching on driver details.
///
/// # Example
/// ```
/// use neo_core::ErrorKind;
/// assert!(ErrorKind::Unavailable.is_retryable());
/// assert!(!ErrorKind::AlreadyExists.is_retryable());
/// assert_eq!(ErrorKind::NotFound.as_str(), "not_found");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// A create collided with something that already exists (e.g. a unique key).
    AlreadyExists,
    /// The input was rejected before anything was written.
    Validation,
    /// The operation lost a race: an optimistic version check, a fencing token, a state transition.
    Conflict,
    /// Too many requests; retry later (possibly after a hint).
    RateLimited,
    /// A dependency (database, cache, remote endpoint) could not be reached or refused service.
    Unavailable,
    /// An operation took longer than its deadline.
    Timeout,
    /// The caller is not authenticated or the credentials are wrong.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// The configuration is invalid or incomplete.
    Configuration,
    /// The component was shut down and no longer accepts work.
    Shutdown,
    /// A bug or an unexpected state; not the caller's fault and not transient.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Validation,
        ErrorKind::Conflict,
        ErrorKind::RateLimited,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::Configuration,
        ErrorKind::Shutdown,
        ErrorKind::Internal,
    ];

    /// Whether retrying the same call later may succeed.
    ///
    /// `RateLimited`, `Unavailable` and `Timeout` are transient; everything else
    /// fails again the same way. Retry policies use this as their default predicate.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }

    /// A stable `snake_case` label, suitable for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Validation => "validation",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status code a JSON API would answer with for this kind.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => 409,
            ErrorKind::Validation => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::Unavailable | ErrorKind::Shutdown => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::Configuration | ErrorKind::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every neo-commons error type: classifies it onto [`ErrorKind`].
///
/// # Example
/// ```
/// use neo_core::{ErrorKind, HasErrorKind, Slug};
/// let err = Slug::parse("Not A Slug").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Validation);
/// assert!(!err.is_retryable());
/// ```
pub trait HasErrorKind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;

    /// Whether retrying may succeed; defaults to [`ErrorKind::is_retryable`].
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Shorthand for `kind() == ErrorKind::NotFound`.
    fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

/// Why an opaque cursor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorErrorReason {
    /// Not valid base64url, or too short to hold a version and a signature.
    Malformed,
    /// The cursor was written by a format version this build does not read.
    UnsupportedVersion(u8),
    /// The signature does not match: the cursor was altered or signed with another key.
    BadSignature,
    /// The signed payload could not be decoded into the expected type.
    BadPayload,
}

impl fmt::Display for CursorErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CursorErrorReason::Malformed => f.write_str("not a cursor issued by this service"),
            CursorErrorReason::UnsupportedVersion(v) => {
                write!(f, "cursor format version {v} is not supported")
            }
            CursorErrorReason::BadSignature => {
                f.write_str("signature mismatch (cursor altered or signed with another key)")
            }
            CursorErrorReason::BadPayload => {
                f.write_str("payload does not match the expected shape")
            }
        }
    }
}

/// The error type of `neo-core`: invalid values, invalid cursors, invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value object or id was refused by its constructor.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which kind of value was being built (`"slug"`, `"email address"`, ...).
        what: &'static str,
        /// What was wrong with it, in words a caller can show to a user.
        reason: String,
    },
    /// Metadata would exceed one of its configured limits.
    #[error("metadata {limit} limit exceeded: {actual} > {max}")]
    MetadataLimit {
        /// Which limit (`"size"`, `"depth"`, `"key count"`).
        limit: &'static str,
        /// The value reached.
        actual: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An opaque pagination cursor was refused.
    #[error("invalid cursor: {0}")]
    Cursor(CursorErrorReason),
    /// Configuration could not be loaded or is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// `what` is longer than `max` characters.
    pub(crate) fn too_long(what: &'static str, max: usize, got: usize) -> Self {
        Error::invalid(what, format!("must be at most {max} characters, got {got}"))
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::MetadataLimit { .. } | Error::Cursor(_) => {
                ErrorKind::Validation
            }
            Error::Config(_) => ErrorKind::Configuration,
        }
    }
}

/// `Result` with [`neo_core::Error`](Error) as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
