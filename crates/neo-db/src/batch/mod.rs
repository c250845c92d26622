//! The generic batch repository: one round trip per chunk instead of one per row.
//!
//! A host describes its table once by implementing [`Record`] for its row type, then uses a
//! [`BatchRepository`] for it. Writes send each column as one array parameter and expand it
//! server-side with `UNNEST`, so a statement has one bind parameter per column whatever the
//! number of rows; reads use `= ANY($1)`. Inputs larger than `max_rows_per_statement` are
//! split into chunks that run in one transaction (or savepoint), so a batch is all or nothing.

mod conn;
mod read;
mod record;
mod statements;
mod write;

pub(crate) use conn::Conn;
use record::bind;
pub use record::{Column, ColumnBinder, Key, Record};
use statements::Statements;
pub(crate) use statements::sql;

use crate::ident::{Ident, Schema, TableName};
use crate::pool::{Db, Shared};
use crate::{Error, ItemError, Result};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

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
    /// The statements of the same table in tenants' schemas ([`Self::save_batch_for`] under
    /// schema per tenant), built on a schema's first use; at most
    /// [`KEPT_SCHEMAS`](crate::StoreTenancy::KEPT_SCHEMAS), then the set starts again.
    per_schema: Arc<Mutex<HashMap<Schema, Arc<Statements>>>>,
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
            per_schema: Arc::clone(&self.per_schema),
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
    /// Whether statements may be prepared under a name ([`crate::Pooler`]).
    pub(crate) fn named(&self) -> bool {
        self.shared.config.pooler.named_statements()
    }

    /// Whether even one statement needs a transaction around it ([`crate::Pooler`]).
    pub(crate) fn pooled(&self) -> bool {
        self.shared.config.pooler.needs_transaction()
    }

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
            per_schema: Arc::default(),
            _row: PhantomData,
        })
    }

    /// [`in_schema`](Self::in_schema) with the statements kept per schema, for the calls
    /// acting for a tenant under schema per tenant.
    pub(crate) fn in_tenant_schema(&self, schema: &Schema) -> Result<Self> {
        let table = self.table.in_schema(schema);
        let mut kept = neo_core::sync::lock(&self.per_schema);
        let sql = match kept.get(schema) {
            Some(sql) => Arc::clone(sql),
            None => {
                let sql = Arc::new(Statements::build::<T>(&table, &self.conflict_target)?);
                if kept.len() >= crate::StoreTenancy::<(), ()>::KEPT_SCHEMAS {
                    kept.clear();
                }
                kept.insert(schema.clone(), Arc::clone(&sql));
                sql
            }
        };
        drop(kept);
        let mut repo = self.clone();
        repo.table = table;
        repo.sql = sql;
        Ok(repo)
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

    /// [`Self::observe`] for a statement that returns rows: counts them, and turns the
    /// driver's error into ours.
    pub(crate) async fn observe_rows<R>(
        &self,
        statement: &'static str,
        query: impl Future<Output = Result<Vec<R>, sqlx::Error>>,
    ) -> Result<Vec<R>> {
        self.observe(statement, |rows: &Vec<R>| rows.len() as u64, async {
            Ok(query.await?)
        })
        .await
    }
}

fn unique_ids<T: Record>(ids: &[T::Id]) -> Vec<T::Id> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
}
