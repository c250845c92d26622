//! neo-batch, with tokio's paused clock where timing matters.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod chunks;
mod loader;
mod writer;

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
