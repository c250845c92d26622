//! The one error type of neo-tenant.

use neo_core::ErrorKind;

/// What went wrong while establishing or reading the current tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant-scoped call ran outside [`scope`](crate::scope): there is no tenant to act for,
    /// so the call is refused rather than run over every tenant (fail closed).
    #[error("no tenant in scope: this call is tenant-scoped and must run inside neo_tenant::scope")]
    NoTenantInScope,
    /// The request does not name a tenant where the resolver looks for one.
    #[error("the request names no tenant: {location}")]
    MissingTenant {
        /// Where the resolver looked (e.g. `header x-tenant-id`).
        location: String,
    },
    /// The request names a tenant, but the text is not a valid tenant id.
    #[error("the tenant in {location} is not a valid tenant id: {reason}")]
    InvalidTenant {
        /// Where the resolver found the text.
        location: String,
        /// Why the text was refused (from [`TenantId::parse`](neo_core::TenantId::parse)).
        reason: String,
    },
    /// A store failed while exporting or purging a tenant's data
    /// ([`TenantData`](crate::TenantData)).
    #[error("tenant data in {store}: {message}")]
    Store {
        /// The store's name ([`TenantData::name`](crate::TenantData::name)).
        store: String,
        /// The kind of the store's error.
        kind: ErrorKind,
        /// The store's error message.
        message: String,
    },
    /// The offboarding archive or its manifest could not be written or read.
    #[error("offboarding archive {path}: {message}")]
    Archive {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// The kind of failure, for status codes and retry decisions.
    ///
    /// No tenant in scope is [`ErrorKind::Unauthorized`] (the caller has not established whom it
    /// acts for); a request naming no tenant is [`ErrorKind::NotFound`] (nothing exists outside a
    /// tenant, and the answer does not tell a prober which header or host would work); an
    /// invalid tenant id is [`ErrorKind::Validation`]; a store's failure keeps the store's kind;
    /// an archive that cannot be written is [`ErrorKind::Unavailable`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoTenantInScope => ErrorKind::Unauthorized,
            Error::MissingTenant { .. } => ErrorKind::NotFound,
            Error::InvalidTenant { .. } => ErrorKind::Validation,
            Error::Store { kind, .. } => *kind,
            Error::Archive { .. } => ErrorKind::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_onto_neo_core() {
        assert_eq!(Error::NoTenantInScope.kind(), ErrorKind::Unauthorized);
        let missing = Error::MissingTenant {
            location: "header x-tenant-id".into(),
        };
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(missing.to_string().contains("header x-tenant-id"));
        let invalid = Error::InvalidTenant {
            location: "path segment 1".into(),
            reason: "not a UUID".into(),
        };
        assert_eq!(invalid.kind(), ErrorKind::Validation);
        assert!(invalid.to_string().contains("not a UUID"));
    }
}
