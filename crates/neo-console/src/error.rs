//! The crate's error type, and how each error answers a browser.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use neo_core::{ErrorKind, HasErrorKind};

/// Everything that can go wrong in neo-console.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credentials, or credentials the authorizer refused.
    #[error("not signed in to the console")]
    Unauthorized,

    /// A POST without the form's CSRF token, or with a wrong one.
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,

    /// Nothing of that id (or another tenant's).
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked up.
        what: &'static str,
        /// Its id as given.
        id: String,
    },

    /// A parameter or a setting was rejected.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The job queue failed.
    #[error(transparent)]
    Queue(#[from] neo_queue::Error),

    /// The webhook store failed.
    #[error(transparent)]
    Events(#[from] neo_events::EventError),

    /// A reading failed.
    #[error(transparent)]
    Observe(#[from] neo_observe::Error),

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

    pub(crate) fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// The HTTP status a browser gets for it.
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Validation => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::RateLimited => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
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
            Error::Unauthorized => ErrorKind::Unauthorized,
            Error::Csrf => ErrorKind::Forbidden,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Invalid { .. } => ErrorKind::Validation,
            Error::Queue(e) => e.kind(),
            Error::Events(e) => e.kind(),
            Error::Observe(e) => e.kind(),
            Error::Db(e) => e.kind(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internal details (SQL, connection strings) stay in the log, not on the page.
        let shown = if status.is_server_error() {
            tracing::error!(error = %self, "console request failed");
            "the console could not read or change this; see the service's log".to_owned()
        } else {
            self.to_string()
        };
        let page = maud::html! {
            (maud::DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (status.as_u16()) " · console" } }
                body { h1 { (status) } p.error { (shown) } }
            }
        };
        let mut response = (status, crate::html::secure(page)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
