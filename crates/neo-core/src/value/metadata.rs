use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Limits a [`Metadata`] object must stay within.
///
/// # Example
/// ```
/// use neo_core::MetadataLimits;
/// let limits = MetadataLimits { max_bytes: 4096, ..MetadataLimits::default() };
/// assert_eq!(limits.max_depth, 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataLimits {
    /// Largest serialized size in bytes (compact JSON).
    pub max_bytes: usize,
    /// Deepest nesting; the top-level object is depth 1.
    pub max_depth: usize,
    /// Most keys, counted over every nested object.
    pub max_keys: usize,
    /// Longest key, in bytes.
    pub max_key_len: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        MetadataLimits {
            max_bytes: 16 * 1024,
            max_depth: 8,
            max_keys: 256,
            max_key_len: 128,
        }
    }
}

/// A JSON object of free-form attributes, guaranteed to be within its [`MetadataLimits`].
///
/// # Example
/// ```
/// use neo_core::{Metadata, MetadataLimits};
/// use serde_json::json;
/// let limits = MetadataLimits::default();
/// let m = Metadata::new(json!({"plan": {"tier": "pro", "seats": 5}}), &limits)?;
/// let merged = m.merge(&json!({"plan": {"seats": 10}, "beta": true}), &limits)?;
/// assert_eq!(merged.get("plan").unwrap()["tier"], "pro");
/// assert_eq!(merged.get("plan").unwrap()["seats"], 10);
/// // `null` removes a key (JSON Merge Patch, RFC 7386).
/// let removed = merged.merge(&json!({"beta": null}), &limits)?;
/// assert!(removed.get("beta").is_none());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// An empty object.
    pub fn empty() -> Self {
        Metadata(Map::new())
    }

    /// Checks `value` against `limits`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `value` is not an object or a key is too long or empty;
    /// [`Error::MetadataLimit`] when size, depth or key count is over its limit.
    pub fn new(value: Value, limits: &MetadataLimits) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        };
        check(&map, limits)?;
        Ok(Metadata(map))
    }

    /// Deep-merges `patch` (JSON Merge Patch semantics: objects merge key by key, `null`
    /// deletes, anything else replaces) and checks the result against `limits`.
    /// `self` is left unchanged; on error nothing is returned but the error.
    ///
    /// # Errors
    /// As [`Metadata::new`], for the merged result, or when `patch` is not an object.
    pub fn merge(&self, patch: &Value, limits: &MetadataLimits) -> Result<Self> {
        let Value::Object(patch) = patch else {
            return Err(Error::invalid(
                "metadata",
                "a merge patch must be a JSON object",
            ));
        };
        let mut merged = self.0.clone();
        merge_into(&mut merged, patch);
        check(&merged, limits)?;
        Ok(Metadata(merged))
    }

    /// Checks this metadata against other `limits` (a service's own, tighter or wider than
    /// those it was built with), without copying it.
    ///
    /// # Errors
    /// As [`Metadata::new`].
    ///
    /// # Example
    /// ```
    /// use neo_core::{Metadata, MetadataLimits};
    /// let m = Metadata::new(serde_json::json!({ "a": 1, "b": 2 }), &MetadataLimits::default())?;
    /// assert!(m.check_within(&MetadataLimits { max_keys: 1, ..MetadataLimits::default() }).is_err());
    /// # Ok::<(), neo_core::Error>(())
    /// ```
    pub fn check_within(&self, limits: &MetadataLimits) -> Result<()> {
        check(&self.0, limits)
    }

    /// The value at a top-level key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Unwraps into a JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// Deserializes with [`MetadataLimits::default`]; use [`Metadata::new`] for other limits.
impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Metadata::new(value, &MetadataLimits::default()).map_err(serde::de::Error::custom)
    }
}

fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(patch_obj) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge_into(existing, patch_obj),
                _ => {
                    let mut fresh = Map::new();
                    merge_into(&mut fresh, patch_obj);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn check(map: &Map<String, Value>, limits: &MetadataLimits) -> Result<()> {
    let mut keys = 0usize;
    walk(map, 1, limits, &mut keys)?;
    let bytes = serde_json::to_vec(map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > limits.max_bytes {
        return Err(Error::MetadataLimit {
            limit: "size",
            actual: bytes,
            max: limits.max_bytes,
        });
    }
    Ok(())
}

fn walk(
    map: &Map<String, Value>,
    depth: usize,
    limits: &MetadataLimits,
    keys: &mut usize,
) -> Result<()> {
    if depth > limits.max_depth {
        return Err(Error::MetadataLimit {
            limit: "depth",
            actual: depth,
            max: limits.max_depth,
        });
    }
    *keys += map.len();
    if *keys > limits.max_keys {
        return Err(Error::MetadataLimit {
            limit: "key count",
            actual: *keys,
            max: limits.max_keys,
        });
    }
    for (key, value) in map {
        if key.is_empty() {
            return Err(Error::invalid("metadata", "keys must not be empty"));
        }
        if key.len() > limits.max_key_len {
            return Err(Error::invalid(
                "metadata",
                format!("key of {} bytes exceeds {}", key.len(), limits.max_key_len),
            ));
        }
        walk_value(value, depth, limits, keys)?;
    }
    Ok(())
}

fn walk_value(
    value: &Value,
    depth: usize,
    limits: &MetadataLimits,
    keys: &mut usize,
) -> Result<()> {
    match value {
        Value::Object(inner) => walk(inner, depth + 1, limits, keys),
        Value::Array(items) => {
            if depth + 1 > limits.max_depth {
                return Err(Error::MetadataLimit {
                    limit: "depth",
                    actual: depth + 1,
                    max: limits.max_depth,
                });
            }
            items
                .iter()
                .try_for_each(|item| walk_value(item, depth + 1, limits, keys))
        }
        _ => Ok(()),
    }
}

#[cfg(feature = "sqlx")]
mod sqlx_impls {
    use super::Metadata;
    use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
    use sqlx::types::Json;
    use sqlx::{Decode, Encode, Postgres, Type};

    impl Type<Postgres> for Metadata {
        fn type_info() -> PgTypeInfo {
            <Json<serde_json::Value> as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <Json<serde_json::Value> as Type<Postgres>>::compatible(ty)
        }
    }
    impl PgHasArrayType for Metadata {
        fn array_type_info() -> PgTypeInfo {
            <Json<serde_json::Value> as PgHasArrayType>::array_type_info()
        }
    }
    impl<'q> Encode<'q, Postgres> for Metadata {
        fn encode_by_ref(
            &self,
            buf: &mut PgArgumentBuffer,
        ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
            <Json<&serde_json::Map<String, serde_json::Value>> as Encode<'q, Postgres>>::encode(
                Json(&self.0),
                buf,
            )
        }
    }
    /// Stored metadata was checked against the host's limits when written, and those limits
    /// may differ from the defaults: decoding only checks that it is an object.
    impl<'r> Decode<'r, Postgres> for Metadata {
        fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
            match <Json<serde_json::Value> as Decode<'r, Postgres>>::decode(value)?.0 {
                serde_json::Value::Object(map) => Ok(Metadata(map)),
                _ => Err(Box::new(crate::Error::invalid(
                    "metadata",
                    "stored value is not a JSON object",
                ))),
            }
        }
    }
}
