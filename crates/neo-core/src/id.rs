//! Typed UUIDv7 identifiers.
//!
//! [`define_id!`](crate::define_id) declares a newtype over [`uuid::Uuid`] that only ever holds a
//! version-7 UUID, so ids sort by creation time and an `OrganizationId` can never be passed
//! where a `UserId` is expected. neo-commons' own ids are declared here; hosts declare theirs
//! with the same macro.

/// Declares a typed UUIDv7 identifier.
///
/// The generated type has `new()` (a fresh v7 id, monotonic within the process), `parse`,
/// `FromStr`, `TryFrom<Uuid>`, `Display` (hyphenated), serde as a string, `Ord` by creation
/// time, `created_at()`, and — when `neo-core`'s `sqlx` feature is on — `sqlx::Type`,
/// `Encode`, `Decode` and `PgHasArrayType` for the Postgres `uuid` type. Non-v7 UUIDs are
/// refused everywhere, including when decoding from the database.
///
/// # Example
/// ```
/// neo_core::define_id! {
///     /// Identifies an invoice.
///     pub struct InvoiceId("invoice id");
/// }
/// let a = InvoiceId::new();
/// let b = InvoiceId::new();
/// assert!(a < b);
/// assert_eq!(a, a.to_string().parse::<InvoiceId>()?);
/// assert!(InvoiceId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").is_err()); // a v4 UUID
/// # Ok::<(), neo_core::Error>(())
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $vis:vis struct $name:ident($label:literal);) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis struct $name($crate::__private::uuid::Uuid);

        #[allow(clippy::new_without_default, reason = "a default id would hide that a new one is generated")]
        impl $name {
            /// What this id is called in error messages.
            pub const LABEL: &'static str = $label;

            /// A fresh id (UUIDv7: creation time, then randomness; monotonic within this process).
            pub fn new() -> Self {
                Self($crate::__private::uuid::Uuid::now_v7())
            }

            /// Parses the hyphenated, simple, braced or URN form of a UUIDv7.
            ///
            /// # Errors
            /// [`Error::Invalid`]($crate::Error::Invalid) when the text is not a UUID or not version 7.
            pub fn parse(text: &str) -> ::core::result::Result<Self, $crate::Error> {
                $crate::id::__parse_v7(text, $label).map(Self)
            }

            /// Wraps an existing UUID after checking that it is a version-7 UUID.
            ///
            /// # Errors
            /// [`Error::Invalid`]($crate::Error::Invalid) when `uuid` is not version 7.
            pub fn from_uuid(uuid: $crate::__private::uuid::Uuid) -> ::core::result::Result<Self, $crate::Error> {
                $crate::id::__check_v7(uuid, $label).map(Self)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &$crate::__private::uuid::Uuid {
                &self.0
            }

            /// Unwraps the UUID.
            pub const fn into_uuid(self) -> $crate::__private::uuid::Uuid {
                self.0
            }

            /// When this id was generated (millisecond precision).
            pub fn created_at(&self) -> $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc> {
                $crate::id::__created_at(&self.0)
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::core::convert::TryFrom<$crate::__private::uuid::Uuid> for $name {
            type Error = $crate::Error;
            fn try_from(uuid: $crate::__private::uuid::Uuid) -> ::core::result::Result<Self, Self::Error> {
                Self::from_uuid(uuid)
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                let uuid = <$crate::__private::uuid::Uuid as $crate::__private::serde::Deserialize>::deserialize(d)?;
                Self::from_uuid(uuid).map_err(<D::Error as $crate::__private::serde::de::Error>::custom)
            }
        }

        $crate::__id_sqlx_impls!($name);
    };
}

#[cfg(feature = "sqlx")]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_sqlx_impls {
    ($name:ident) => {
        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $name {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::uuid::Uuid as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
        }

        impl $crate::__private::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::uuid::Uuid as $crate::__private::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::core::result::Result<$crate::__private::sqlx::encode::IsNull, $crate::__private::sqlx::error::BoxDynError> {
                <$crate::__private::uuid::Uuid as $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $name {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::core::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                let uuid = <$crate::__private::uuid::Uuid as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value)?;
                Ok(Self::from_uuid(uuid)?)
            }
        }
    };
}

#[cfg(not(feature = "sqlx"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_sqlx_impls {
    ($name:ident) => {};
}

use crate::Error;
use chrono::{DateTime, Utc};
use uuid::{Uuid, Version};

#[doc(hidden)]
pub fn __parse_v7(text: &str, label: &'static str) -> Result<Uuid, Error> {
    // Longest accepted form is the URN (45 bytes); refuse anything longer without echoing it.
    if text.len() > 45 {
        return Err(Error::invalid(
            label,
            format!("{} characters is too long for a UUID", text.len()),
        ));
    }
    let uuid =
        Uuid::try_parse(text).map_err(|e| Error::invalid(label, format!("not a UUID ({e})")))?;
    __check_v7(uuid, label)
}

#[doc(hidden)]
pub fn __check_v7(uuid: Uuid, label: &'static str) -> Result<Uuid, Error> {
    match uuid.get_version() {
        Some(Version::SortRand) if uuid.get_variant() == uuid::Variant::RFC4122 => Ok(uuid),
        Some(_) if uuid.is_nil() => Err(Error::invalid(label, "the nil UUID is not an id")),
        _ => Err(Error::invalid(
            label,
            format!(
                "expected a version-7 UUID, got version {}",
                uuid.get_version_num()
            ),
        )),
    }
}

#[doc(hidden)]
pub fn __created_at(uuid: &Uuid) -> DateTime<Utc> {
    let millis = uuid
        .get_timestamp()
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
                + i64::from(nanos / 1_000_000)
        })
        .unwrap_or(0);
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::UNIX_EPOCH)
}

define_id! {
    /// Identifies an organization.
    pub struct OrganizationId("organization id");
}
define_id! {
    /// Identifies a user.
    pub struct UserId("user id");
}
define_id! {
    /// Identifies a tenant (the unit of data isolation).
    pub struct TenantId("tenant id");
}
define_id! {
    /// Identifies a domain event.
    pub struct EventId("event id");
}
define_id! {
    /// Identifies a background job.
    pub struct JobId("job id");
}
define_id! {
    /// Identifies a webhook endpoint.
    pub struct EndpointId("endpoint id");
}
define_id! {
    /// Identifies one delivery attempt series of an event to an endpoint.
    pub struct DeliveryId("delivery id");
}

/// An organization is a tenant of the services built on neo-commons: its id names the
/// tenant its data and events belong to (both are UUIDv7, so this cannot fail).
impl From<OrganizationId> for TenantId {
    fn from(organization: OrganizationId) -> Self {
        TenantId(organization.0)
    }
}
