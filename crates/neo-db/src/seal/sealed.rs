//! [`Sealed<T>`]: a column value a user marks sensitive, stored sealed in a `bytea` column.
//!
//! The binding (table, column, row) is not known to sqlx's `Encode`/`Decode`, so sealing is
//! explicit: [`Sealed::seal`] before binding, [`Sealed::open`] after decoding, each with the
//! value's [`Binding`]. What sqlx binds and decodes is the sealed bytes, so a `Sealed<T>`
//! field works wherever a `Vec<u8>` does: `query().bind`, `FromRow`, and the columns of the
//! [`BatchRepository`](crate::BatchRepository) (as a `bytea[]` array).

use super::{Binding, Parts, SealProblem, Sealer, seal_error};
use crate::Result;
use neo_core::{ExposeSecret, SecretString};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};
use std::fmt;
use std::marker::PhantomData;
use zeroize::Zeroizing;

/// What a [`Sealed`] value can hold: a type with a byte form.
pub trait SealValue: Sized {
    /// The value's bytes (zeroized when dropped).
    fn to_plain(&self) -> Zeroizing<Vec<u8>>;

    /// The value back from its bytes.
    ///
    /// # Errors
    /// Why the bytes are not a value of this type (never the bytes themselves).
    fn from_plain(bytes: &[u8]) -> std::result::Result<Self, String>;
}

impl SealValue for String {
    fn to_plain(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.as_bytes().to_vec())
    }

    fn from_plain(bytes: &[u8]) -> std::result::Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_owned())
    }
}

impl SealValue for SecretString {
    fn to_plain(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.expose_secret().as_bytes().to_vec())
    }

    fn from_plain(bytes: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        Ok(SecretString::from(text))
    }
}

impl SealValue for Vec<u8> {
    fn to_plain(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.clone())
    }

    fn from_plain(bytes: &[u8]) -> std::result::Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// A `T` sealed for one column of one row: the bytes a `bytea` column stores. `Debug` shows
/// the key id and length only.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, sealer: neo_db::seal::Sealer) -> neo_db::Result<()> {
/// use neo_db::seal::{Binding, Sealed};
/// let id = uuid::Uuid::now_v7();
/// let row = id.to_string();
/// let here = Binding::new("accounts", "card_number", &row);
/// let card = Sealed::seal(&sealer, &"4111 1111 1111 1111".to_owned(), &here).await?;
/// sqlx::query("INSERT INTO accounts (id, card_number) VALUES ($1, $2)")
///     .bind(id)
///     .bind(&card)
///     .execute(db.pool())
///     .await?;
/// let stored: Sealed<String> = sqlx::query_scalar("SELECT card_number FROM accounts WHERE id = $1")
///     .bind(id)
///     .fetch_one(db.pool())
///     .await?;
/// assert_eq!(stored.open(&sealer, &here).await?, "4111 1111 1111 1111");
/// # Ok(()) }
/// ```
pub struct Sealed<T> {
    bytes: Vec<u8>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Sealed<T> {
    fn clone(&self) -> Self {
        Sealed::from_bytes_unchecked(self.bytes.clone())
    }
}

impl<T> PartialEq for Sealed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Sealed<T> {}

impl<T> fmt::Debug for Sealed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id().unwrap_or("?"))
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<T: SealValue> Sealed<T> {
    /// Seals `value` for `binding` under the sealer's current key.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) when the provider cannot wrap a data key.
    pub async fn seal(sealer: &Sealer, value: &T, binding: &Binding<'_>) -> Result<Self> {
        let plain = value.to_plain();
        Ok(Sealed::from_bytes_unchecked(
            sealer.seal(&plain, binding).await?,
        ))
    }

    /// Opens the value sealed for `binding`.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) naming the key id: unknown or different key, a
    /// value sealed for another binding, bytes that are not a `T`.
    pub async fn open(&self, sealer: &Sealer, binding: &Binding<'_>) -> Result<T> {
        let plain = sealer.open(&self.bytes, binding).await?;
        T::from_plain(&plain).map_err(|why| {
            seal_error(
                self.key_id().unwrap_or(""),
                SealProblem::Malformed(format!("the opened value: {why}")),
            )
        })
    }

    /// The same value sealed again under the sealer's current key (rotation); `self` when it
    /// is already under it.
    ///
    /// # Errors
    /// As [`open`](Sealed::open) and [`seal`](Sealed::seal).
    pub async fn reseal(&self, sealer: &Sealer, binding: &Binding<'_>) -> Result<Self> {
        if self.key_id() == Some(sealer.current_key_id().as_str()) {
            return Ok(self.clone());
        }
        let plain = Zeroizing::new(sealer.open(&self.bytes, binding).await?.to_vec());
        Ok(Sealed::from_bytes_unchecked(
            sealer.seal(&plain, binding).await?,
        ))
    }
}

impl<T> Sealed<T> {
    fn from_bytes_unchecked(bytes: Vec<u8>) -> Self {
        Sealed {
            bytes,
            _value: PhantomData,
        }
    }

    /// Stored bytes read some other way (e.g. `COPY`), checked to be a sealed value.
    ///
    /// # Errors
    /// [`Error::Seal`](crate::Error::Seal) with [`SealProblem::Malformed`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Parts::parse(&bytes)?;
        Ok(Sealed::from_bytes_unchecked(bytes))
    }

    /// The sealed bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The id of the key the value is sealed under (to find values under a key being
    /// retired).
    pub fn key_id(&self) -> Option<&str> {
        Parts::parse(&self.bytes).ok().map(|p| p.key_id)
    }
}

impl<T> Type<Postgres> for Sealed<T> {
    fn type_info() -> PgTypeInfo {
        <Vec<u8> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<u8> as Type<Postgres>>::compatible(ty)
    }
}

impl<T> PgHasArrayType for Sealed<T> {
    fn array_type_info() -> PgTypeInfo {
        <Vec<u8> as PgHasArrayType>::array_type_info()
    }
}

impl<T> Encode<'_, Postgres> for Sealed<T> {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
        <&[u8] as Encode<Postgres>>::encode(self.bytes.as_slice(), buf)
    }
}

impl<'r, T> Decode<'r, Postgres> for Sealed<T> {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let bytes = <Vec<u8> as Decode<Postgres>>::decode(value)?;
        Parts::parse(&bytes).map_err(|e| Box::new(e) as BoxDynError)?;
        Ok(Sealed::from_bytes_unchecked(bytes))
    }
}
