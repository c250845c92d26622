use neo_core::{ErrorKind, HasErrorKind};

/// What can go wrong while providing a test server.
///
/// Every message says what to do about it: which package to install, which variable to set,
/// or where the server's log is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server binaries are not installed.
    #[error(
        "{server} binaries not found ({looked}). Install them with `{install}` \
         (scripts/test does this for you), or set {env_var} to a server you run yourself"
    )]
    BinaryMissing {
        /// Which server (`"PostgreSQL 15+"`, `"Redis 7+"`).
        server: &'static str,
        /// Where we looked.
        looked: String,
        /// The command that installs it.
        install: &'static str,
        /// The variable that points the tests at an existing server instead.
        env_var: &'static str,
    },
    /// The server did not start; `log` holds the end of its log.
    #[error("{server} did not start: {detail}\n--- last lines of its log ---\n{log}")]
    Startup {
        /// Which server.
        server: &'static str,
        /// What failed.
        detail: String,
        /// The end of the server's log.
        log: String,
    },
    /// A command or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server shared by this process could not be provided (the first attempt's error).
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),
    /// Test certificates could not be generated.
    #[error("generating test certificates: {0}")]
    Certificates(String),
    /// Talking to the server failed.
    #[error("{context}: {detail}")]
    Client {
        /// What we were doing.
        context: String,
        /// The driver's message.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn client<E: std::fmt::Display>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |e| Error::Client {
            context,
            detail: e.to_string(),
        }
    }
}

impl HasErrorKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::BinaryMissing { .. } => ErrorKind::Configuration,
            Error::Startup { .. } | Error::Io { .. } | Error::Client { .. } => {
                ErrorKind::Unavailable
            }
            Error::Certificates(_) => ErrorKind::Internal,
            Error::Shared(inner) => inner.kind(),
        }
    }
}

/// `Result` with the testkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
