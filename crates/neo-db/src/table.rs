//! What `#[derive(Record)]` (feature `derive`) builds on: [`Table`], a [`Record`] that knows
//! its table and schema so its repository and COPY writer come from the type alone, and
//! [`RecordColumn`], the types a batch column can have.

use crate::Result;
use crate::batch::{BatchRepository, ColumnBinder, Record};
use crate::copy::{CopyRow, CopyWriter};
use crate::ident::Schema;
use crate::pool::Db;
use crate::tenancy::TenantIsolation;
use neo_core::TenantId;
use sqlx::Row as _;
use sqlx::postgres::{PgHasArrayType, PgRow};
use sqlx::{Decode, Encode, Postgres, Type};

/// A type a [`Record`] column can have: sqlx encodes it, decodes it and binds it as an array
/// (the `UNNEST` parameter of batch writes).
///
/// Implemented for every such type: `bool`, `i16`, `i32`, `i64`, `f32`, `f64`, `String`,
/// `Vec<u8>`, `uuid::Uuid`, `chrono` dates and times, `serde_json::Value`, the neo-core ids,
/// your own types with `#[derive(sqlx::Type)]`, and `Option` of each. `#[derive(Record)]`
/// requires it of every field that is a column, so a field without a mapping fails to compile
/// at the field, with this trait's message (once for each sqlx trait the type lacks).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no PostgreSQL mapping for a Record column",
    label = "no PostgreSQL column type for this field",
    note = "use a type sqlx maps to a column (i64, String, uuid::Uuid, chrono::DateTime<Utc>, serde_json::Value, a neo-core id, ...)",
    note = "for your own enum or newtype, `#[derive(sqlx::Type)]` on it (add `#[record(cast = \"pg_type\")]` on the field when the column has a type of its own)",
    note = "a field that is not a column: `#[record(skip)]`"
)]
pub trait RecordColumn: Sized {
    /// Binds this column of every row (what the derived `bind_columns` calls).
    ///
    /// # Errors
    /// As [`ColumnBinder::column`].
    #[doc(hidden)]
    fn bind_column<'a, T>(
        binder: &mut ColumnBinder<'a, T>,
        column: &str,
        value: impl FnMut(&'a T) -> &'a Self,
    ) -> Result<()>
    where
        Self: 'a;

    /// Reads this column of a row (what the derived `FromRow` calls).
    ///
    /// # Errors
    /// As [`sqlx::Row::try_get`].
    #[doc(hidden)]
    fn read_column(row: &PgRow, column: &str) -> sqlx::Result<Self>;
}

impl<V> RecordColumn for V
where
    V: for<'q> Encode<'q, Postgres>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + PgHasArrayType,
{
    #[inline]
    fn bind_column<'a, T>(
        binder: &mut ColumnBinder<'a, T>,
        column: &str,
        value: impl FnMut(&'a T) -> &'a Self,
    ) -> Result<()>
    where
        Self: 'a,
    {
        binder.column(column, value)
    }

    #[inline]
    fn read_column(row: &PgRow, column: &str) -> sqlx::Result<Self> {
        row.try_get(column)
    }
}

/// The schema a [`Table`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableSchema {
    /// Unqualified: the connection's `search_path` finds it (a unit of work from
    /// [`Db::begin_in_schema`] or [`TenantIsolation::begin`] sets it).
    SearchPath,
    /// Always this schema (`#[record(schema = "billing")]`).
    Named(&'static str),
    /// In each tenant's schema (`#[record(schema = tenant)]`): named by
    /// [`TenantIsolation::schema_of`], shared under row-level security.
    Tenant,
}

/// A [`Record`] that knows its table; `#[derive(Record)]` with `#[record(table = "...")]`
/// implements it.
///
/// # Example
/// ```no_run
/// # #[cfg(feature = "derive")]
/// # async fn demo(db: neo_db::Db, isolation: neo_db::TenantIsolation, tenant: neo_core::TenantId) -> neo_db::Result<()> {
/// use neo_db::{OnConflict, Table};
///
/// #[derive(Debug, Clone, neo_db::Record)]
/// #[record(table = "orders", schema = tenant)]
/// struct Order { id: uuid::Uuid, total_cents: i64 }
///
/// let orders = vec![Order { id: uuid::Uuid::now_v7(), total_cents: 1200 }];
/// let repo = Order::tenant_batch_repository(&db, &isolation, tenant)?;
/// repo.save_batch(&db, &orders, OnConflict::Error).await?;
/// # Ok(()) }
/// ```
pub trait Table: Record {
    /// The table name, unqualified.
    const TABLE: &'static str;

    /// Where the table lives.
    const SCHEMA: TableSchema = TableSchema::SearchPath;

    /// The table's name as [`BatchRepository::new`] and [`CopyWriter::new`] take it:
    /// `schema.table` for a [`TableSchema::Named`] schema, else the bare table.
    fn table_name() -> String {
        match Self::SCHEMA {
            TableSchema::Named(schema) => format!("{schema}.{}", Self::TABLE),
            TableSchema::SearchPath | TableSchema::Tenant => Self::TABLE.to_owned(),
        }
    }

    /// The repository of this table (for a [`TableSchema::Tenant`] table, the unqualified
    /// one: call [`BatchRepository::in_schema`], or use
    /// [`tenant_batch_repository`](Self::tenant_batch_repository)).
    ///
    /// # Errors
    /// As [`BatchRepository::new`].
    fn batch_repository(db: &Db) -> Result<BatchRepository<Self>> {
        BatchRepository::new(db, &Self::table_name())
    }

    /// The repository of `tenant`'s table: in the tenant's schema for a
    /// [`TableSchema::Tenant`] table under schema-per-tenant isolation; otherwise the same as
    /// [`batch_repository`](Self::batch_repository) (under row-level security, run it in a
    /// unit of work from [`TenantIsolation::begin`]).
    ///
    /// # Errors
    /// As [`BatchRepository::new`]; the resolver's error.
    fn tenant_batch_repository(
        db: &Db,
        isolation: &TenantIsolation,
        tenant: TenantId,
    ) -> Result<BatchRepository<Self>> {
        let repo = Self::batch_repository(db)?;
        match (Self::SCHEMA, isolation.schema_of(tenant)?) {
            (TableSchema::Tenant, Some(schema)) => repo.in_schema(&schema),
            _ => Ok(repo),
        }
    }

    /// A COPY writer into this table (or, given a `schema`, into the table in that schema).
    ///
    /// # Errors
    /// As [`CopyWriter::new`].
    fn copy_writer(db: &Db, schema: Option<&Schema>) -> Result<CopyWriter<Self>>
    where
        Self: CopyRow,
    {
        match schema {
            Some(schema) => CopyWriter::new(db, &format!("{}.{}", schema.as_str(), Self::TABLE)),
            None => CopyWriter::new(db, &Self::table_name()),
        }
    }
}

/// What the code `#[derive(Record)]` generates calls; not a public API.
#[doc(hidden)]
pub mod __private {
    use sqlx::Row as _;
    use sqlx::postgres::PgRow;

    /// The type of a `#[record(version)]` field.
    #[diagnostic::on_unimplemented(
        message = "the version column must be `i64`, not `{Self}`",
        label = "use `i64` here (an `int8` column)",
        note = "`update_batch` compares the stored version with the record's and increments it, as `int8`"
    )]
    pub trait VersionColumn {}

    impl VersionColumn for i64 {}

    /// Compiles only for a [`VersionColumn`].
    pub const fn version_column<V: VersionColumn>() {}

    /// Reads one column the record reads but never writes.
    #[inline]
    pub fn get_read_only<V>(row: &PgRow, column: &str) -> sqlx::Result<V>
    where
        V: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(column)
    }
}
