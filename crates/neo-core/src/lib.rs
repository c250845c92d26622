//! The foundation of neo-commons: typed ids, validated value objects, the error vocabulary,
//! pagination with signed cursors, and a clock. No I/O, no async runtime, no drivers.
//!
//! ```
//! use neo_core::{EmailAddress, ErrorKind, HasErrorKind, OrganizationId, Slug};
//!
//! let id = OrganizationId::new();
//! let slug = Slug::parse("acme")?;
//! let owner = EmailAddress::parse("owner@acme.example")?;
//! assert_eq!(id, id.to_string().parse()?);
//!
//! let err = Slug::parse("--bad").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Validation);
//! println!("{slug} {owner}: {err}");
//! # Ok::<(), neo_core::Error>(())
//! ```
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `sqlx` | `sqlx::Type`/`Encode`/`Decode` for ids (Postgres `uuid`, arrays too), value objects (`text`) and `Metadata` (`jsonb`) |
//! | `env` | [`config::from_env`]: config structs from `NEO_*` environment variables |

pub mod clock;
#[cfg(feature = "env")]
pub mod config;
mod cursor;
mod error;
pub mod id;
pub mod metric;
pub mod pagination;
pub mod sync;
pub mod trace;
pub mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cursor::CursorCodec;
pub use error::{CursorErrorReason, Error, ErrorKind, HasErrorKind, Result};
pub use id::{DeliveryId, EndpointId, EventId, JobId, OrganizationId, TenantId, UserId};
pub use metric::{MetricDef, MetricKind};
pub use pagination::{CountMode, CursorPage, CursorRequest, Page, PageRequest, PaginationConfig};
pub use secrecy::{ExposeSecret, SecretString};
pub use trace::TraceContext;
pub use value::{
    CountryCode, DomainName, EmailAddress, HttpsUrl, MAX_RESOURCE_NAME_LEN, Metadata,
    MetadataLimits, RESOURCE_NAME_RULE, Slug, is_resource_name, validate_resource_name,
};

#[doc(hidden)]
pub mod __private {
    pub use chrono;
    pub use serde;
    #[cfg(feature = "sqlx")]
    pub use sqlx;
    pub use uuid;
}
