//! The crate's error type.

use neo_core::{ErrorKind, HasErrorKind};

/// Result alias for neo-redis.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in neo-redis. No variant repeats a URL or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (e.g. the URL does not parse; its text, which may hold
    /// a password, is not repeated).
    #[error("redis configuration: {0}")]
    Config(String),

    /// Two settings that cannot go together are both set: two ways to reach Redis (`url`,
    /// `cluster.nodes`, `sentinel.*`), or TLS files with plaintext (`redis://`) URLs.
    #[error(
        "redis configuration: `{first}` and `{second}` are both set, and they do not go together: keep one"
    )]
    ConflictingSettings {
        /// One of the settings.
        first: &'static str,
        /// The setting it conflicts with.
        second: &'static str,
    },

    /// One setting is wrong on its own (missing, empty, not a valid URL, an unreadable file).
    #[error("redis configuration: `{setting}` {reason}")]
    InvalidSetting {
        /// The setting, as written in the configuration (`cluster.nodes[1]`, `tls.ca_file`).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// None of the seed nodes could be reached.
    #[error("redis is unavailable: no seed node answered ({}): {reason}", nodes.join(", "))]
    Unreachable {
        /// `host:port` of every node tried.
        nodes: Vec<String>,
        /// What the last attempt said.
        reason: String,
    },

    /// No sentinel named a master that answered (the sentinels are down or unreachable, or
    /// none knows the master, or the master it names does not answer).
    #[error(
        "redis is unavailable: no sentinel ({}) gave a reachable master {master_name:?}: {reason}",
        sentinels.join(", ")
    )]
    SentinelUnreachable {
        /// `host:port` of every sentinel asked.
        sentinels: Vec<String>,
        /// The master name asked for.
        master_name: String,
        /// What the last attempt said.
        reason: String,
    },

    /// A connection could not be set up.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::ConflictingSettings { .. } | Error::InvalidSetting { .. } => {
                ErrorKind::Configuration
            }
            Error::Unreachable { .. }
            | Error::SentinelUnreachable { .. }
            | Error::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}
