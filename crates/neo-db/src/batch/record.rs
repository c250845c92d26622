//! What a host implements to describe its table: [`Record`] for its row type, with its
//! [`Key`] and [`Column`]s, and the [`ColumnBinder`] that turns a chunk of rows into one
//! array parameter per column.

use crate::{Error, Result};
use sqlx::postgres::{PgArguments, PgHasArrayType, PgRow};
use sqlx::{Arguments, Decode, Encode, FromRow, Postgres, Type};
use std::fmt::{self, Display};
use std::hash::Hash;

/// The id type of a [`Record`]: anything sqlx can bind as an array and decode, hashable.
pub trait Key:
    for<'q> Encode<'q, Postgres>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + PgHasArrayType
    + Clone
    + Eq
    + Hash
    + Display
    + Send
    + Sync
    + Unpin
    + 'static
{
}

impl<T> Key for T where
    T: for<'q> Encode<'q, Postgres>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + PgHasArrayType
        + Clone
        + Eq
        + Hash
        + Display
        + Send
        + Sync
        + Unpin
        + 'static
{
}

/// A column written by batch operations, with an optional cast for types the driver cannot
/// name (enums, domains): `Column::new("status").cast("order_status")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub(super) name: &'static str,
    pub(super) cast: Option<&'static str>,
}

impl Column {
    /// A column bound with the driver's type for its Rust values.
    pub const fn new(name: &'static str) -> Self {
        Column { name, cast: None }
    }

    /// Casts the bound values to `sql_type` (a `pg_type` name such as `order_status`,
    /// `int4`, `timestamptz`; validated like every identifier).
    pub const fn cast(self, sql_type: &'static str) -> Self {
        Column {
            name: self.name,
            cast: Some(sql_type),
        }
    }

    /// The column name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// A row type stored in a table that batch operations read and write.
///
/// Reads decode rows with `FromRow` from `SELECT *`, so the struct may include columns the
/// database fills in (defaults, generated columns) that are not in [`Record::COLUMNS`].
///
/// # Example
/// ```
/// use neo_db::{Column, ColumnBinder, Record};
///
/// #[derive(Debug, Clone, sqlx::FromRow)]
/// struct Product { id: uuid::Uuid, name: String, price_cents: i64, version: i64 }
///
/// impl Record for Product {
///     type Id = uuid::Uuid;
///     const COLUMNS: &'static [Column] = &[
///         Column::new("id"), Column::new("name"), Column::new("price_cents"), Column::new("version"),
///     ];
///     const VERSION_COLUMN: Option<&'static str> = Some("version");
///
///     fn id(&self) -> &uuid::Uuid { &self.id }
///
///     fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
///         b.column("id", |p| p.id)?;
///         b.column("name", |p| p.name.as_str())?;
///         b.column("price_cents", |p| p.price_cents)?;
///         b.column("version", |p| p.version)
///     }
///
///     fn validate(&self) -> Result<(), String> {
///         if self.price_cents < 0 { return Err("price_cents is negative".into()); }
///         Ok(())
///     }
/// }
/// ```
pub trait Record: for<'r> FromRow<'r, PgRow> + Send + Sync + Unpin + 'static {
    /// The primary key type.
    type Id: Key;

    /// The columns batch writes fill, in the order [`Record::bind_columns`] pushes them.
    /// Must include [`Record::ID_COLUMN`] (and [`Record::VERSION_COLUMN`] when set).
    const COLUMNS: &'static [Column];

    /// The primary key column.
    const ID_COLUMN: &'static str = "id";

    /// The optimistic-concurrency column (`int8`): `update_batch` only updates rows whose
    /// stored version equals the record's, and increments it.
    const VERSION_COLUMN: Option<&'static str> = None;

    /// The record's id.
    fn id(&self) -> &Self::Id;

    /// Pushes one array per column of [`Record::COLUMNS`], in order.
    ///
    /// # Errors
    /// Whatever [`ColumnBinder::column`] reports.
    fn bind_columns(binder: &mut ColumnBinder<'_, Self>) -> Result<()>;

    /// Checks one record before anything is written; `Err` holds the reason.
    ///
    /// # Errors
    /// The reason the record is invalid.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Collects one array parameter per column for a chunk of rows.
pub struct ColumnBinder<'a, T> {
    rows: &'a [T],
    columns: &'static [Column],
    pushed: usize,
    args: PgArguments,
}

impl<T> fmt::Debug for ColumnBinder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnBinder")
            .field("rows", &self.rows.len())
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

impl<'a, T> ColumnBinder<'a, T> {
    fn new(rows: &'a [T], columns: &'static [Column]) -> Self {
        let mut args = PgArguments::default();
        args.reserve(columns.len(), rows.len() * columns.len() * 16);
        ColumnBinder {
            rows,
            columns,
            pushed: 0,
            args,
        }
    }

    /// The rows being bound.
    pub fn rows(&self) -> &'a [T] {
        self.rows
    }

    /// Binds column `name` as an array of `value(row)` for every row.
    ///
    /// # Errors
    /// [`Error::ColumnLength`] when `name` is not the next column of `COLUMNS`;
    /// [`Error::Invalid`] when a value cannot be encoded.
    pub fn column<V>(&mut self, name: &str, value: impl FnMut(&'a T) -> V) -> Result<()>
    where
        V: for<'q> Encode<'q, Postgres> + Type<Postgres> + PgHasArrayType,
    {
        let values: Vec<V> = self.rows.iter().map(value).collect();
        self.push(name, values)
    }

    /// Binds column `name` from an array built by the caller; its length must equal the
    /// number of rows.
    ///
    /// # Errors
    /// [`Error::ColumnLength`] for a wrong length or a column out of order;
    /// [`Error::Invalid`] when a value cannot be encoded.
    pub fn push<V>(&mut self, name: &str, values: Vec<V>) -> Result<()>
    where
        V: for<'q> Encode<'q, Postgres> + Type<Postgres> + PgHasArrayType,
    {
        match self.columns.get(self.pushed) {
            Some(expected) if expected.name == name => {}
            Some(expected) => {
                return Err(Error::invalid(
                    "bound column",
                    format!(
                        "column {name:?} was pushed where COLUMNS declares {:?} (push columns in declaration order)",
                        expected.name
                    ),
                ));
            }
            None => {
                return Err(Error::ColumnLength {
                    column: name.to_owned(),
                    expected: self.columns.len(),
                    actual: self.pushed + 1,
                });
            }
        }
        if values.len() != self.rows.len() {
            return Err(Error::ColumnLength {
                column: name.to_owned(),
                expected: self.rows.len(),
                actual: values.len(),
            });
        }
        self.args
            .add(values)
            .map_err(|e| Error::invalid("column value", format!("column {name}: {e}")))?;
        self.pushed += 1;
        Ok(())
    }

    fn finish(self) -> Result<PgArguments> {
        if self.pushed != self.columns.len() {
            let missing = self.columns[self.pushed.min(self.columns.len() - 1)].name;
            return Err(Error::ColumnLength {
                column: format!("{missing} (and later columns were never pushed)"),
                expected: self.columns.len(),
                actual: self.pushed,
            });
        }
        Ok(self.args)
    }
}

/// One array parameter per column of `T::COLUMNS` for `rows`.
pub(super) fn bind<T: Record>(rows: &[T]) -> Result<PgArguments> {
    let mut binder = ColumnBinder::new(rows, T::COLUMNS);
    T::bind_columns(&mut binder)?;
    binder.finish()
}
