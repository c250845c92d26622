//! neo-resilience, with tokio's paused clock wherever timing matters.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod breaker;
mod limits;
mod policy;
mod retry;

use neo_core::{ErrorKind, HasErrorKind};

/// An error of a chosen kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(pub(crate) ErrorKind);

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
