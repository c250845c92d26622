//! The generic batch repository: one round trip per chunk instead of one per row.
//!
//! A host describes its table once by implementing [`Record`] for its row type, then uses a
//! [`BatchRepository`] for it. Writes send each column as one array parameter and expand it
//! server-side with `UNNEST`, so a statement has one bind parameter per column whatever the
//! number of rows; reads use `= ANY($1)`. Inputs larger than `max_rows_per_statement` are
//! split into chunks that run in one transaction (or savepoint), so a batch is all or nothing.

use crate::ident::{Ident, Schema, TableName};
use crate::pool::{Db, Shared};
use crate::{Error, ItemError, Result};
use sqlx::postgres::{PgArguments, PgHasArrayType, PgRow};
use sqlx::{Acquire, Arguments, AssertSqlSafe, Encode, FromRow, PgConnection, Postgres, SqlStr};
use sqlx::{Decode, Transaction, Type};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Display, Write as _};
use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

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
    name: &'static str,
    cast: Option<&'static str>,
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

/// What `save_batch` does when a row conflicts with an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Fail with kind `AlreadyExists`; nothing of the batch is written.
    #[default]
    Error,
    /// Skip the conflicting rows (`ON CONFLICT DO NOTHING`).
    Ignore,
    /// Overwrite them with the new values (`ON CONFLICT DO UPDATE`), incrementing the version.
    Update,
}

impl OnConflict {
    fn index(self) -> usize {
        match self {
            OnConflict::Error => 0,
            OnConflict::Ignore => 1,
            OnConflict::Update => 2,
        }
    }
}

/// SQL built once per repository (and schema).
#[derive(Debug)]
struct Statements {
    insert: [SqlStr; 3],
    insert_returning: [SqlStr; 3],
    select_by_ids: SqlStr,
    exists_by_ids: SqlStr,
    delete_by_ids: SqlStr,
    update: SqlStr,
}

/// Batch operations on the table of `T`; cheap to clone.
///
/// Every method takes any [`sqlx::Acquire`]: `&db` (the pool) or `&mut *uow` /
/// `&mut tx` (an open transaction, so several calls commit together).
///
/// # Example
/// ```no_run
/// # use neo_db::{Column, ColumnBinder, Record};
/// # #[derive(Debug, Clone, sqlx::FromRow)]
/// # struct Product { id: uuid::Uuid, name: String }
/// # impl Record for Product {
/// #     type Id = uuid::Uuid;
/// #     const COLUMNS: &'static [Column] = &[Column::new("id"), Column::new("name")];
/// #     fn id(&self) -> &uuid::Uuid { &self.id }
/// #     fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
/// #         b.column("id", |p| p.id)?; b.column("name", |p| p.name.as_str())
/// #     }
/// # }
/// # async fn demo(db: neo_db::Db, products: Vec<Product>) -> neo_db::Result<()> {
/// use neo_db::{BatchRepository, OnConflict};
/// let repo = BatchRepository::<Product>::new(&db, "products")?;
/// repo.save_batch(&db, &products, OnConflict::Update).await?;
/// let ids: Vec<_> = products.iter().map(|p| p.id).collect();
/// let loaded: Vec<Option<Product>> = repo.load_batch(&db, &ids).await?;
///
/// // Two batches in one transaction:
/// let mut uow = db.begin().await?;
/// repo.save_batch(&mut *uow, &products, OnConflict::Ignore).await?;
/// repo.delete_batch(&mut *uow, &ids[..1]).await?;
/// uow.commit().await?;
/// # Ok(()) }
/// ```
pub struct BatchRepository<T: Record> {
    pub(crate) table: TableName,
    sql: Arc<Statements>,
    conflict_target: Arc<[Ident]>,
    pub(crate) sortable: Arc<[Ident]>,
    pub(crate) id_column: Ident,
    pub(crate) max_rows: usize,
    pub(crate) shared: Arc<Shared>,
    _row: PhantomData<fn() -> T>,
}

impl<T: Record> Clone for BatchRepository<T> {
    fn clone(&self) -> Self {
        BatchRepository {
            table: self.table.clone(),
            sql: Arc::clone(&self.sql),
            conflict_target: Arc::clone(&self.conflict_target),
            sortable: Arc::clone(&self.sortable),
            id_column: self.id_column.clone(),
            max_rows: self.max_rows,
            shared: Arc::clone(&self.shared),
            _row: PhantomData,
        }
    }
}

impl<T: Record> fmt::Debug for BatchRepository<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRepository")
            .field("table", &self.table)
            .field("max_rows_per_statement", &self.max_rows)
            .finish_non_exhaustive()
    }
}

impl<T: Record> BatchRepository<T> {
    /// A repository for `table` (`name` or `schema.name`), with the telemetry and
    /// `max_rows_per_statement` of `db`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad table, column or cast name, or `COLUMNS` that lack the id
    /// or version column.
    pub fn new(db: &Db, table: &str) -> Result<Self> {
        let table = TableName::parse(table)?;
        let id_column = Ident::new(T::ID_COLUMN)?;
        Self::build(
            table,
            Arc::from(vec![id_column.clone()]),
            Arc::from(Vec::new()),
            id_column,
            db.config().max_rows_per_statement,
            Arc::clone(db.shared()),
        )
    }

    fn build(
        table: TableName,
        conflict_target: Arc<[Ident]>,
        sortable: Arc<[Ident]>,
        id_column: Ident,
        max_rows: usize,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let sql = Arc::new(Statements::build::<T>(&table, &conflict_target)?);
        Ok(BatchRepository {
            table,
            sql,
            conflict_target,
            sortable,
            id_column,
            max_rows: max_rows.max(1),
            shared,
            _row: PhantomData,
        })
    }

    /// The same repository for the table in a tenant's `schema` (qualified names; no
    /// `search_path` change needed).
    ///
    /// # Errors
    /// Never for a valid `Schema`; kept fallible for symmetry with [`Self::new`].
    pub fn in_schema(&self, schema: &Schema) -> Result<Self> {
        Self::build(
            self.table.in_schema(schema),
            Arc::clone(&self.conflict_target),
            Arc::clone(&self.sortable),
            self.id_column.clone(),
            self.max_rows,
            Arc::clone(&self.shared),
        )
    }

    /// Uses `columns` (a unique constraint) instead of the id as the `ON CONFLICT` target.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad column name or an empty list.
    pub fn with_conflict_target(&self, columns: &[&str]) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::invalid("conflict target", "no column given"));
        }
        let target = columns
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<Vec<_>>>()?;
        Self::build(
            self.table.clone(),
            Arc::from(target),
            Arc::clone(&self.sortable),
            self.id_column.clone(),
            self.max_rows,
            Arc::clone(&self.shared),
        )
    }

    /// Allows these columns as sort keys of the paging methods (a whitelist: any other
    /// sort key is refused before SQL is built).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad column name.
    pub fn with_sortable(&self, columns: &[&str]) -> Result<Self> {
        let sortable = columns
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<Vec<_>>>()?;
        let mut repo = self.clone();
        repo.sortable = Arc::from(sortable);
        Ok(repo)
    }

    /// Splits statements at `rows` rows (at least 1).
    #[must_use]
    pub fn with_max_rows_per_statement(&self, rows: usize) -> Self {
        let mut repo = self.clone();
        repo.max_rows = rows.max(1);
        repo
    }

    /// The table this repository works on.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Checks every record ([`Record::validate`]) and that no id appears twice; reports every
    /// failing item with its index. Sends nothing to the database.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] listing each failure.
    pub fn validate_batch(&self, rows: &[T]) -> Result<()> {
        let mut failures = Vec::new();
        let mut first_seen: HashMap<&T::Id, usize> = HashMap::with_capacity(rows.len());
        for (index, row) in rows.iter().enumerate() {
            if let Err(reason) = row.validate() {
                failures.push(ItemError { index, reason });
            }
            if let Some(first) = first_seen.insert(row.id(), index) {
                failures.push(ItemError {
                    index,
                    reason: format!("duplicate id {} (also at index {first})", row.id()),
                });
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidBatch { failures })
        }
    }

    /// Inserts `rows` with `INSERT ... SELECT FROM UNNEST(...)`, one statement per chunk;
    /// returns the number of rows written (conflicting rows skipped by
    /// [`OnConflict::Ignore`] are not counted). An empty batch sends nothing.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] (checked first, nothing sent), kind `AlreadyExists` on a
    /// conflict with [`OnConflict::Error`], or another database error; in every case nothing
    /// of the batch is written.
    pub async fn save_batch<'c, A>(
        &self,
        exec: A,
        rows: &[T],
        on_conflict: OnConflict,
    ) -> Result<u64>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if rows.is_empty() {
            return Ok(0);
        }
        self.validate_batch(rows)?;
        let sql = &self.sql.insert[on_conflict.index()];
        let mut conn = Conn::open(exec, rows.len() > self.max_rows).await?;
        let mut written = 0;
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
            let query = sqlx::query_with(sql.clone(), args).execute(&mut *conn);
            let done = self
                .observe(
                    "save_batch",
                    |r: &sqlx::postgres::PgQueryResult| r.rows_affected(),
                    async { Ok(query.await?) },
                )
                .await?;
            written += done.rows_affected();
        }
        conn.finish().await?;
        Ok(written)
    }

    /// As [`Self::save_batch`], returning the stored rows (`RETURNING *`, with defaults the
    /// database filled in).
    ///
    /// # Errors
    /// As [`Self::save_batch`].
    pub async fn save_batch_returning<'c, A>(
        &self,
        exec: A,
        rows: &[T],
        on_conflict: OnConflict,
    ) -> Result<Vec<T>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.validate_batch(rows)?;
        let sql = &self.sql.insert_returning[on_conflict.index()];
        let mut conn = Conn::open(exec, rows.len() > self.max_rows).await?;
        let mut saved = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
            let query = sqlx::query_as_with::<_, T, _>(sql.clone(), args).fetch_all(&mut *conn);
            saved.extend(
                self.observe("save_batch_returning", |r: &Vec<T>| r.len() as u64, async {
                    Ok(query.await?)
                })
                .await?,
            );
        }
        conn.finish().await?;
        Ok(saved)
    }

    /// Loads the rows with these ids: the result has one entry per input id, in input order,
    /// `None` where no row exists. Duplicate ids are fetched once and returned at each of
    /// their positions.
    ///
    /// # Errors
    /// A database error.
    pub async fn load_batch<'c, A>(&self, exec: A, ids: &[T::Id]) -> Result<Vec<Option<T>>>
    where
        A: Acquire<'c, Database = Postgres>,
        T: Clone,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let unique = unique_ids::<T>(ids);
        let mut conn = Conn::open(exec, false).await?;
        let mut found: HashMap<T::Id, T> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_as::<_, T>(self.sql.select_by_ids.clone())
                .bind(chunk)
                .fetch_all(&mut *conn);
            let rows = self
                .observe("load_batch", |r: &Vec<T>| r.len() as u64, async {
                    Ok(query.await?)
                })
                .await?;
            found.extend(rows.into_iter().map(|row| (row.id().clone(), row)));
        }
        drop(conn);
        if unique.len() == ids.len() {
            return Ok(ids.iter().map(|id| found.remove(id)).collect());
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    /// Which of these ids exist, aligned with the input.
    ///
    /// # Errors
    /// A database error.
    pub async fn exists_batch<'c, A>(&self, exec: A, ids: &[T::Id]) -> Result<Vec<bool>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let unique = unique_ids::<T>(ids);
        let mut conn = Conn::open(exec, false).await?;
        let mut present: HashSet<T::Id> = HashSet::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_scalar::<_, T::Id>(self.sql.exists_by_ids.clone())
                .bind(chunk)
                .fetch_all(&mut *conn);
            present.extend(
                self.observe("exists_batch", |r: &Vec<T::Id>| r.len() as u64, async {
                    Ok(query.await?)
                })
                .await?,
            );
        }
        Ok(ids.iter().map(|id| present.contains(id)).collect())
    }

    /// Deletes the rows with these ids; returns the ids that existed (and are now gone).
    ///
    /// # Errors
    /// A database error (a foreign key still pointing at a row is kind `Validation`); nothing
    /// is deleted then.
    pub async fn delete_batch<'c, A>(&self, exec: A, ids: &[T::Id]) -> Result<Vec<T::Id>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let unique = unique_ids::<T>(ids);
        let mut conn = Conn::open(exec, unique.len() > self.max_rows).await?;
        let mut deleted = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_scalar::<_, T::Id>(self.sql.delete_by_ids.clone())
                .bind(chunk)
                .fetch_all(&mut *conn);
            deleted.extend(
                self.observe("delete_batch", |r: &Vec<T::Id>| r.len() as u64, async {
                    Ok(query.await?)
                })
                .await?,
            );
        }
        conn.finish().await?;
        Ok(deleted)
    }

    /// Updates every row from `rows` with `UPDATE ... FROM UNNEST(...)`, all or nothing.
    ///
    /// With a [`Record::VERSION_COLUMN`], a row is updated only if its stored version equals
    /// the record's, and the stored version is incremented; the returned rows carry the new
    /// versions. Rows that changed since they were read, or no longer exist, are reported
    /// together and nothing is written.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] (checked first), [`Error::VersionConflict`] naming every
    /// conflicting id, or a database error.
    pub async fn update_batch<'c, A>(&self, exec: A, rows: &[T]) -> Result<Vec<T>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.validate_batch(rows)?;
        let mut conn = Conn::open(exec, true).await?;
        let mut updated = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
            let query =
                sqlx::query_as_with::<_, T, _>(self.sql.update.clone(), args).fetch_all(&mut *conn);
            updated.extend(
                self.observe("update_batch", |r: &Vec<T>| r.len() as u64, async {
                    Ok(query.await?)
                })
                .await?,
            );
        }
        if updated.len() != rows.len() {
            let done: HashSet<&T::Id> = updated.iter().map(Record::id).collect();
            let (indices, ids) = rows
                .iter()
                .enumerate()
                .filter(|(_, row)| !done.contains(row.id()))
                .map(|(index, row)| (index, row.id().to_string()))
                .unzip();
            // Dropping `conn` rolls the transaction (or savepoint) back.
            return Err(Error::VersionConflict { indices, ids });
        }
        conn.finish().await?;
        Ok(updated)
    }

    pub(crate) async fn observe<R>(
        &self,
        statement: &'static str,
        rows: impl FnOnce(&R) -> u64,
        query: impl Future<Output = Result<R>>,
    ) -> Result<R> {
        self.shared
            .telemetry
            .observe(statement, &self.table, rows, query)
            .await
    }
}

fn unique_ids<T: Record>(ids: &[T::Id]) -> Vec<T::Id> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
}

fn bind<T: Record>(rows: &[T]) -> Result<PgArguments> {
    let mut binder = ColumnBinder::new(rows, T::COLUMNS);
    T::bind_columns(&mut binder)?;
    binder.finish()
}

/// Either a plain connection (one statement) or a transaction/savepoint (several that must
/// succeed together). Dropping it before [`Conn::finish`] rolls back.
pub(crate) enum Conn<'c, C> {
    Plain(C),
    Atomic(Transaction<'c, Postgres>),
}

impl<'c, C> Conn<'c, C>
where
    C: DerefMut<Target = PgConnection>,
{
    pub(crate) async fn open<A>(exec: A, atomic: bool) -> Result<Self>
    where
        A: Acquire<'c, Database = Postgres, Connection = C>,
    {
        Ok(if atomic {
            Conn::Atomic(exec.begin().await?)
        } else {
            Conn::Plain(exec.acquire().await?)
        })
    }

    pub(crate) async fn finish(self) -> Result<()> {
        if let Conn::Atomic(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl<C: DerefMut<Target = PgConnection>> Deref for Conn<'_, C> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Plain(c) => c,
            Conn::Atomic(tx) => tx,
        }
    }
}

impl<C: DerefMut<Target = PgConnection>> DerefMut for Conn<'_, C> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Plain(c) => c,
            Conn::Atomic(tx) => tx,
        }
    }
}

impl Statements {
    fn build<T: Record>(table: &TableName, conflict_target: &[Ident]) -> Result<Self> {
        if T::COLUMNS.is_empty() {
            return Err(Error::invalid("columns", "Record::COLUMNS is empty"));
        }
        let columns = T::COLUMNS
            .iter()
            .map(|c| {
                let cast = c.cast.map(cast_type).transpose()?;
                Ok((Ident::new(c.name)?, cast))
            })
            .collect::<Result<Vec<_>>>()?;
        let id = Ident::new(T::ID_COLUMN)?;
        let version = T::VERSION_COLUMN.map(Ident::new).transpose()?;
        for required in std::iter::once(&id).chain(version.as_ref()) {
            if !columns.iter().any(|(c, _)| c == required) {
                return Err(Error::invalid(
                    "columns",
                    format!("Record::COLUMNS must include {}", required.as_str()),
                ));
            }
        }

        let list = join(columns.iter().map(|(c, _)| c.to_string()));
        let params = join((1..=columns.len()).map(|i| format!("${i}")));
        let selected = join(columns.iter().map(|(c, cast)| match cast {
            Some(ty) => format!("_u.{c}::{ty}"),
            None => format!("_u.{c}"),
        }));
        let insert_base = format!(
            "INSERT INTO {table} AS _t ({list}) SELECT {selected} FROM UNNEST({params}) AS _u({list})"
        );
        let target = join(conflict_target.iter().map(ToString::to_string));
        let mut overwrite: Vec<String> = columns
            .iter()
            .filter(|(c, _)| *c != id && Some(c) != version.as_ref())
            .map(|(c, _)| format!("{c} = EXCLUDED.{c}"))
            .collect();
        if let Some(v) = &version {
            overwrite.push(format!("{v} = _t.{v} + 1"));
        }
        let update_clause = if overwrite.is_empty() {
            format!(" ON CONFLICT ({target}) DO NOTHING")
        } else {
            format!(
                " ON CONFLICT ({target}) DO UPDATE SET {}",
                overwrite.join(", ")
            )
        };
        let suffixes = [
            "",
            &format!(" ON CONFLICT ({target}) DO NOTHING"),
            &update_clause,
        ];
        let insert = suffixes.map(|s| sql(format!("{insert_base}{s}")));
        let insert_returning = suffixes.map(|s| sql(format!("{insert_base}{s} RETURNING _t.*")));

        let mut assignments: Vec<String> = columns
            .iter()
            .filter(|(c, _)| *c != id && Some(c) != version.as_ref())
            .map(|(c, cast)| match cast {
                Some(ty) => format!("{c} = _u.{c}::{ty}"),
                None => format!("{c} = _u.{c}"),
            })
            .collect();
        let mut condition = format!("_t.{id} = _u.{id}");
        if let Some(v) = &version {
            assignments.push(format!("{v} = _t.{v} + 1"));
            let _ = write!(condition, " AND _t.{v} = _u.{v}");
        }
        if assignments.is_empty() {
            // Only the id: "update" is a no-op that still checks existence.
            assignments.push(format!("{id} = _t.{id}"));
        }
        let update = sql(format!(
            "UPDATE {table} AS _t SET {} FROM UNNEST({params}) AS _u({list}) WHERE {condition} RETURNING _t.*",
            assignments.join(", ")
        ));

        Ok(Statements {
            insert,
            insert_returning,
            select_by_ids: sql(format!("SELECT * FROM {table} WHERE {id} = ANY($1)")),
            exists_by_ids: sql(format!("SELECT {id} FROM {table} WHERE {id} = ANY($1)")),
            delete_by_ids: sql(format!(
                "DELETE FROM {table} WHERE {id} = ANY($1) RETURNING {id}"
            )),
            update,
        })
    }
}

/// A cast target: a validated type name, optionally an array (`text[]`).
fn cast_type(sql_type: &str) -> Result<String> {
    match sql_type.strip_suffix("[]") {
        Some(base) => Ok(format!("{}[]", Ident::new(base)?)),
        None => Ok(Ident::new(sql_type)?.to_string()),
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// SQL text assembled only from validated, quoted identifiers and fixed keywords.
pub(crate) fn sql(text: String) -> SqlStr {
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(text))
}
