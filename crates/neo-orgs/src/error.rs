//! The crate's one error type, [`OrgError`], and its kinds.

use crate::OrgStatus;
use neo_core::{ErrorKind, HasErrorKind};

/// Everything that can go wrong with organizations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrgError {
    /// A value was rejected before anything was written.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The status does not allow the change.
    #[error("cannot {action} while {status}")]
    Transition {
        /// The current status.
        status: &'static str,
        /// What was attempted.
        action: String,
    },
    /// Nothing with this id exists.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Someone saved the organization since it was read.
    #[error(
        "organization {id} was changed meanwhile: read version {expected}, stored version {actual}"
    )]
    Conflict {
        /// The organization.
        id: String,
        /// The version the caller read.
        expected: i64,
        /// The version stored now.
        actual: i64,
    },
    /// The slug, domain or id is taken.
    #[error("{what} {value} already exists")]
    AlreadyExists {
        /// What is taken.
        what: &'static str,
        /// The taken value.
        value: String,
    },
    /// An invitation token was refused (nothing was changed): forged, expired, used or
    /// revoked, each its own [`InvitationRefusal`].
    #[error("invitation refused: {0}")]
    Invitation(InvitationRefusal),
    /// A domain's verification was refused or could not finish (nothing was changed):
    /// expired claim, token not published yet, or a DNS answer that timed out, was too large
    /// or malformed, each its own [`DomainRefusal`].
    #[error("domain verification: {0}")]
    Domain(DomainRefusal),
    /// An organization verification cannot move from its status to the one asked
    /// (`submitted` → `in_review` → `verified` / `rejected`).
    #[error("verification {id} cannot go from {from} to {to}")]
    VerificationTransition {
        /// The verification.
        id: String,
        /// Its status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// A dependency (the tax id check) failed, timed out or is held off by its breaker.
    #[error("{0}")]
    Unavailable(String),
    /// A core value was rejected.
    #[error(transparent)]
    Core(#[from] neo_core::Error),
    /// The database failed (a duplicate slug or domain is kind `AlreadyExists`).
    #[error(transparent)]
    Db(#[from] neo_db::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] neo_cache::Error),
    /// A tenant-scoped call ran without a tenant (fail closed: never a query over every
    /// tenant).
    #[error(transparent)]
    Tenant(#[from] neo_tenant::Error),
    /// Publishing the events failed.
    #[error(transparent)]
    Events(#[from] neo_events::EventError),
}

/// Why an invitation token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvitationRefusal {
    /// Not a token this service issued: malformed, unknown, or its secret does not match
    /// (also a token replaced by a resend).
    #[error("the token is not valid")]
    Forged,
    /// Issued, but past its expiry.
    #[error("the invitation has expired")]
    Expired,
    /// Already accepted (tokens are single use).
    #[error("the invitation was already used")]
    Used,
    /// Revoked by the organization.
    #[error("the invitation was revoked")]
    Revoked,
}

/// Why a domain was not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainRefusal {
    /// The claim is past its expiry: claim the domain again.
    #[error("the claim has expired")]
    Expired,
    /// None of the domain's TXT records holds the claim's token (yet).
    #[error("no TXT record of the domain holds the token")]
    TokenAbsent,
    /// The DNS lookup did not answer within the configured timeout.
    #[error("the DNS lookup timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The answer held more TXT records or bytes than the configured limits.
    #[error("the DNS answer is too large: {0}")]
    TooLarge(String),
    /// The answer could not be read as DNS (or the lookup failed otherwise).
    #[error("the DNS lookup failed: {0}")]
    Lookup(String),
}

impl DomainRefusal {
    /// Whether checking again later may succeed (the verification job retries these).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DomainRefusal::Expired)
    }
}

impl OrgError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        OrgError::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn transition(status: OrgStatus, action: &str) -> Self {
        OrgError::Transition {
            status: status.as_str(),
            action: action.to_owned(),
        }
    }

    pub(crate) fn already_exists(what: &'static str, value: impl std::fmt::Display) -> Self {
        OrgError::AlreadyExists {
            what,
            value: value.to_string(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        OrgError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl HasErrorKind for OrgError {
    fn kind(&self) -> ErrorKind {
        match self {
            OrgError::Invalid { .. } | OrgError::Transition { .. } => ErrorKind::Validation,
            OrgError::NotFound { .. } => ErrorKind::NotFound,
            OrgError::Conflict { .. } => ErrorKind::Conflict,
            OrgError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            OrgError::Invitation(InvitationRefusal::Forged) => ErrorKind::Unauthorized,
            OrgError::Invitation(_) => ErrorKind::Conflict,
            OrgError::Domain(DomainRefusal::Expired | DomainRefusal::TokenAbsent) => {
                ErrorKind::Conflict
            }
            OrgError::Domain(DomainRefusal::Timeout(_)) => ErrorKind::Timeout,
            OrgError::Domain(_) => ErrorKind::Unavailable,
            OrgError::VerificationTransition { .. } => ErrorKind::Conflict,
            OrgError::Unavailable(_) => ErrorKind::Unavailable,
            OrgError::Core(e) => e.kind(),
            OrgError::Db(e) => e.kind(),
            OrgError::Cache(e) => e.kind(),
            OrgError::Events(e) => e.kind(),
            OrgError::Tenant(e) => e.kind(),
        }
    }
}
