//! The crate's error type and the classification of PostgreSQL errors onto [`ErrorKind`].

use neo_core::{ErrorKind, HasErrorKind};
use std::fmt;

/// Result alias for neo-db.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One rejected item of a batch, by its position in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// Position of the item in the batch the caller passed.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {}: {}", self.index, self.reason)
    }
}

/// Everything that can go wrong in neo-db.
///
/// Every variant maps onto the shared vocabulary through [`HasErrorKind::kind`]; driver errors
/// are classified by SQLSTATE (see [`Error::Database`]) and keep the driver error as `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given to neo-db was rejected before any SQL was sent (an identifier, a sort key,
    /// a configuration value).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being checked (`"identifier"`, `"sort key"`, ...).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// Items of a batch failed validation; nothing was written.
    #[error("{} item(s) of the batch are invalid, nothing was written: {}", .failures.len(), display_list(.failures))]
    InvalidBatch {
        /// Every failing item, in input order.
        failures: Vec<ItemError>,
    },

    /// A [`Record::bind_columns`](crate::Record::bind_columns) implementation pushed a column
    /// whose length differs from the number of rows, or the wrong number of columns.
    #[error("column {column} has {actual} values but the batch has {expected} rows")]
    ColumnLength {
        /// The column (by name) whose values do not line up.
        column: String,
        /// Rows in the batch (or columns declared).
        expected: usize,
        /// Values pushed (or columns pushed).
        actual: usize,
    },

    /// Optimistic concurrency: these rows were changed (or deleted) since they were read.
    /// Nothing of the batch was written.
    #[error("version conflict on {} row(s), nothing was written: ids {}", .ids.len(), .ids.join(", "))]
    VersionConflict {
        /// Positions in the input of the conflicting rows.
        indices: Vec<usize>,
        /// Their ids, as text.
        ids: Vec<String>,
    },

    /// A row of a COPY was rejected by PostgreSQL; nothing from that flush was committed.
    #[error("COPY rejected row {row} (0-based, counted from the first row written): {message}")]
    CopyRow {
        /// Position of the bad row among all rows written to the writer.
        row: u64,
        /// PostgreSQL's message and detail.
        message: String,
        /// The classification of the underlying error.
        kind: ErrorKind,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// PostgreSQL or the driver failed; `kind` is the classification by SQLSTATE.
    #[error("database error ({kind}{}{}): {source}", code_suffix(.code.as_deref()), constraint_suffix(.constraint.as_deref()))]
    Database {
        /// The classification (unique violation → `AlreadyExists`, deadlock → `Conflict`, ...).
        kind: ErrorKind,
        /// The SQLSTATE, when PostgreSQL sent one.
        code: Option<String>,
        /// The violated constraint, when there is one.
        constraint: Option<String>,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// A migration failed or the applied migrations do not match the known ones.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Configuration could not be loaded or is inconsistent.
    #[error("database configuration: {0}")]
    Config(String),

    /// An `sslmode` (in the URL, `NEO_DB_SSL_MODE` or `PGSSLMODE`) that libpq does not know.
    #[error("unknown sslmode {value:?}: accepted values are {}", crate::SslMode::ACCEPTED.join(", "))]
    UnknownSslMode {
        /// The value as given.
        value: String,
    },

    /// The TLS connection to the server could not be made: the server does not offer TLS,
    /// or its certificate was refused (see [`TlsProblem`]).
    #[error("TLS connection to the database refused: {problem}")]
    Tls {
        /// What was wrong.
        problem: TlsProblem,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// A sealed value could not be sealed or opened (feature `seal`): a key the provider does
    /// not hold, a different key, a value sealed for another row or column. Names the key id,
    /// never the value.
    #[cfg(feature = "seal")]
    #[error("sealed value under key id {key_id:?}: {problem}")]
    Seal {
        /// The key id of the key-encryption key (empty when the value is too malformed to
        /// name one).
        key_id: String,
        /// What went wrong.
        problem: crate::seal::SealProblem,
    },
}

/// Why a TLS connection to the server was refused ([`Error::Tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// `sslmode` is `require` or stricter and the server does not offer TLS.
    NotOffered,
    /// The certificate is not signed by a trusted CA: the one in `sslrootcert`, or the
    /// bundled Mozilla roots (which are trusted as well when `sslrootcert` is set).
    UntrustedCertificate,
    /// `verify-full`: the certificate does not name the host connected to.
    NameMismatch {
        /// The host of the URL (empty when the TLS library did not say).
        host: String,
        /// The names the certificate holds.
        names: Vec<String>,
    },
    /// The certificate was refused for another reason (expired, not yet valid, wrong use).
    InvalidCertificate(String),
    /// The handshake failed otherwise (protocol versions, ciphers, a cut connection).
    Handshake(String),
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::NotOffered => f.write_str(
                "the server does not offer TLS and sslmode requires it (set ssl = on on the server, or sslmode = prefer)",
            ),
            TlsProblem::UntrustedCertificate => f.write_str(
                "the server's certificate is not trusted: it is not signed by the CA in sslrootcert \
                 (NEO_DB_SSL_ROOT_CERT) nor by a bundled root",
            ),
            TlsProblem::NameMismatch { host, names } => {
                f.write_str("the server's certificate does not match the host name")?;
                if !host.is_empty() {
                    write!(f, ": connected to {host:?}")?;
                }
                if names.is_empty() {
                    Ok(())
                } else {
                    write!(f, ", the certificate names {}", names.join(", "))
                }
            }
            TlsProblem::InvalidCertificate(reason) => {
                write!(f, "the server's certificate is invalid: {reason}")
            }
            TlsProblem::Handshake(reason) => write!(f, "the TLS handshake failed: {reason}"),
        }
    }
}

impl TlsProblem {
    /// `Configuration` when a setting on either side must change, `Unavailable` for a
    /// handshake that failed on the way.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TlsProblem::Handshake(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Configuration,
        }
    }
}

fn display_list(failures: &[ItemError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn code_suffix(code: Option<&str>) -> String {
    code.map(|c| format!(", SQLSTATE {c}")).unwrap_or_default()
}

fn constraint_suffix(constraint: Option<&str>) -> String {
    constraint
        .map(|c| format!(", constraint {c}"))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// The SQLSTATE of a database error, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The violated constraint of a database error, if any.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Database { constraint, .. } => constraint.as_deref(),
            _ => None,
        }
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::InvalidBatch { .. } | Error::ColumnLength { .. } => {
                ErrorKind::Validation
            }
            Error::VersionConflict { .. } => ErrorKind::Conflict,
            Error::CopyRow { kind, .. } | Error::Database { kind, .. } => *kind,
            Error::Migrate(_) => ErrorKind::Internal,
            Error::Config(_) | Error::UnknownSslMode { .. } => ErrorKind::Configuration,
            Error::Tls { problem, .. } => problem.kind(),
            #[cfg(feature = "seal")]
            Error::Seal { problem, .. } => problem.kind(),
        }
    }

    /// Retryable kinds, plus serialization failures, deadlocks and lock timeouts: those are
    /// `Conflict`s that succeed when the whole transaction is run again.
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable() || matches!(self.sqlstate(), Some("40001" | "40P01" | "55P03"))
    }
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        if let Some(problem) = crate::tls::problem(&source) {
            return Error::Tls { problem, source };
        }
        let (code, constraint) = match source.as_database_error() {
            Some(db) => (
                db.code().map(|c| c.into_owned()),
                db.constraint().map(str::to_owned),
            ),
            None => (None, None),
        };
        Error::Database {
            kind: classify(&source),
            code,
            constraint,
            source,
        }
    }
}

impl From<neo_core::Error> for Error {
    fn from(error: neo_core::Error) -> Self {
        match error {
            neo_core::Error::Config(message) => Error::Config(message),
            other => Error::invalid("value", other.to_string()),
        }
    }
}

/// Classifies a driver error onto the shared vocabulary.
///
/// | SQLSTATE / driver error | kind |
/// |---|---|
/// | `23505` unique violation, `23P01` exclusion violation | `AlreadyExists` |
/// | `23503` foreign key, `23514` check, `23502` not null, `21000` cardinality, class `22` data exception | `Validation` |
/// | `40001` serialization failure, `40P01` deadlock, `55P03` lock not available | `Conflict` (and [`HasErrorKind::is_retryable`]) |
/// | `57014` query canceled (statement timeout), pool acquire timeout | `Timeout` |
/// | class `08` connection, `57P01`–`57P03` shutdown/cannot connect, I/O, closed pool | `Unavailable` |
/// | TLS: no TLS where `sslmode` requires it, certificate refused / other handshake failure | `Configuration` / `Unavailable` |
/// | `RowNotFound` | `NotFound` |
/// | class `28` authorization, `42501` insufficient privilege | `Unauthorized` / `Forbidden` |
/// | anything else | `Internal` |
pub fn classify(error: &sqlx::Error) -> ErrorKind {
    if let Some(problem) = crate::tls::problem(error) {
        return problem.kind();
    }
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => classify_sqlstate(&code),
            None => ErrorKind::Internal,
        },
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            ErrorKind::Unavailable
        }
        sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::Configuration(_) => ErrorKind::Configuration,
        sqlx::Error::Protocol(message) if message.contains("connection") => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// Classifies a SQLSTATE (see [`classify`]).
pub fn classify_sqlstate(code: &str) -> ErrorKind {
    match code {
        "23505" | "23P01" => ErrorKind::AlreadyExists,
        "23503" | "23514" | "23502" | "23000" | "23001" | "21000" => ErrorKind::Validation,
        "40001" | "40P01" | "55P03" => ErrorKind::Conflict,
        "57014" => ErrorKind::Timeout,
        "57P01" | "57P02" | "57P03" | "53300" => ErrorKind::Unavailable,
        "42501" => ErrorKind::Forbidden,
        _ if code.starts_with("08") => ErrorKind::Unavailable,
        _ if code.starts_with("22") => ErrorKind::Validation,
        _ if code.starts_with("28") => ErrorKind::Unauthorized,
        _ => ErrorKind::Internal,
    }
}
