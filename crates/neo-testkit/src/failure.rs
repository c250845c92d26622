//! An error of a chosen kind, for tests of code that decides by `ErrorKind` (retries,
//! breakers, batchers).

use neo_core::{ErrorKind, HasErrorKind};

/// An error whose [`kind`](HasErrorKind::kind) is the one it was made with.
///
/// # Example
/// ```
/// use neo_core::{ErrorKind, HasErrorKind};
/// let timeout = neo_testkit::Failure(ErrorKind::Timeout);
/// assert!(timeout.kind().is_retryable());
/// assert_eq!(timeout.to_string(), "failure (timeout)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure(pub ErrorKind);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failure ({})", self.0)
    }
}

impl std::error::Error for Failure {}

impl HasErrorKind for Failure {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}
