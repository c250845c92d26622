//! Validated value objects: a value that exists is valid.
//!
//! Each type validates in its constructor (`parse`, `FromStr`, `TryFrom`, serde), keeps its
//! field private, and says in its error what was wrong.
//!
//! **Whitespace rule.** Every string value object refuses text with leading or trailing
//! whitespace instead of trimming it: `EmailAddress::parse("a@b.com ")` is an error that says
//! so. A value object never changes what it was given beyond documented normalisation (case,
//! IDNA); trimming user input is a decision of the edge that received it (a form handler), made
//! once, where it is visible. Free-text fields of entities (an organization's name) are not
//! value objects and trim themselves.

mod country;
mod domain;
mod email;
mod metadata;
mod name;
mod slug;
mod url;

pub use country::CountryCode;
pub use domain::DomainName;
pub use email::EmailAddress;
pub use metadata::{Metadata, MetadataLimits};
pub use name::{
    MAX_RESOURCE_NAME_LEN, RESOURCE_NAME_RULE, is_resource_name, validate_resource_name,
};
pub use slug::Slug;
pub use url::HttpsUrl;

/// Refuses text with leading or trailing whitespace (see the module docs' whitespace rule).
pub(crate) fn refuse_surrounding_whitespace(what: &'static str, text: &str) -> crate::Result<()> {
    let first = text.chars().next();
    let last = text.chars().next_back();
    if first.is_some_and(char::is_whitespace) || last.is_some_and(char::is_whitespace) {
        return Err(crate::Error::invalid(
            what,
            "has leading or trailing whitespace; trim the input before parsing",
        ));
    }
    Ok(())
}

/// Implements `Display`, `FromStr`, `AsRef<str>`, serde (as a string) and `TryFrom<&str>`/`TryFrom<String>`
/// for a string-backed value object with `fn parse(&str) -> Result<Self>` and `fn as_str(&self) -> &str`.
macro_rules! string_value_impls {
    ($ty:ty) => {
        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::core::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl ::core::convert::TryFrom<&str> for $ty {
            type Error = $crate::Error;
            fn try_from(s: &str) -> ::core::result::Result<Self, Self::Error> {
                Self::parse(s)
            }
        }
        impl ::core::convert::TryFrom<String> for $ty {
            type Error = $crate::Error;
            fn try_from(s: String) -> ::core::result::Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                s: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                Self::parse(&text).map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
        #[cfg(feature = "sqlx")]
        impl ::sqlx::Type<::sqlx::Postgres> for $ty {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }
        #[cfg(feature = "sqlx")]
        impl ::sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
            fn array_compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }
        #[cfg(feature = "sqlx")]
        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> ::core::result::Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
        #[cfg(feature = "sqlx")]
        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for $ty {
            fn decode(
                value: ::sqlx::postgres::PgValueRef<'r>,
            ) -> ::core::result::Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)?;
                Ok(Self::parse(text)?)
            }
        }
    };
}
pub(crate) use string_value_impls;
