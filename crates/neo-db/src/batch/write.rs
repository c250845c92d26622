//! Batch writes: insert (with the [`OnConflict`] choice), update with optimistic versions,
//! delete; each one statement per chunk, all chunks in one transaction.

use super::{BatchRepository, Conn, OnConflict, Record, bind, unique_ids};
use crate::pool::Db;
use crate::{Error, Result, RlsSetting, TenantIsolation};
use neo_core::TenantId;
use sqlx::{Acquire, Arguments as _, Postgres};
use std::collections::HashSet;

impl<T: Record> BatchRepository<T> {
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
        self.insert(exec, rows, on_conflict, None).await
    }

    /// [`save_batch`](Self::save_batch) acting for `tenant` under `isolation`, on a
    /// connection of `db`'s own — what a tenant-isolated store calls for a write:
    ///
    /// - **Schema per tenant**: into the table of this repository's name in the tenant's
    ///   schema (statements built on the schema's first use and kept), one autocommit
    ///   statement per chunk.
    /// - **Row-level security**: into this repository's (shared) table, with the tenant's
    ///   setting put in force *by the statement itself*: a materialized CTE,
    ///   `WITH _neo_tenant AS MATERIALIZED (SELECT set_config(<setting>, <tenant>, true))`,
    ///   joined into the rows the `INSERT` writes. One statement is one round trip — no
    ///   `BEGIN`, no `COMMIT` — and the setting is transaction-local to the statement's own
    ///   implicit transaction, so it ends with the statement (safe behind PgBouncer in
    ///   transaction mode; behind a [transaction pooler](crate::Pooler) the statement runs in
    ///   a transaction of its own anyway, and the setting ends with it).
    ///
    /// The rows reach the table only through the join, so every check PostgreSQL makes per
    /// row — the policy's `WITH CHECK`, the `USING` of an existing row an `ON CONFLICT DO
    /// UPDATE` would overwrite, a `tenant_id` column default reading the setting
    /// ([`RlsSetting::current_tenant_sql`](crate::RlsSetting::current_tenant_sql)) — sees the
    /// tenant. It fails closed otherwise: whatever PostgreSQL evaluates before the CTE ran
    /// sees no tenant (a row written then fails the policy with an error), never another
    /// tenant's, as the setting holds only this tenant or nothing within the statement. A
    /// statement-level `BEFORE INSERT` trigger runs before any row, so it sees no tenant.
    ///
    /// It takes the `Db`, not a caller's transaction: the setting the statement sets would
    /// stay in force for the rest of that transaction. In a unit of work acting for a
    /// tenant ([`TenantIsolation::begin`]), call [`save_batch`](Self::save_batch) on it.
    ///
    /// # Example
    /// ```no_run
    /// # use neo_db::{Column, ColumnBinder, Record};
    /// # #[derive(Debug, Clone, sqlx::FromRow)]
    /// # struct Note { id: uuid::Uuid, body: String }
    /// # impl Record for Note {
    /// #     type Id = uuid::Uuid;
    /// #     const COLUMNS: &'static [Column] = &[Column::new("id"), Column::new("body")];
    /// #     fn id(&self) -> &uuid::Uuid { &self.id }
    /// #     fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
    /// #         b.column("id", |n| n.id)?; b.column("body", |n| n.body.as_str())
    /// #     }
    /// # }
    /// # async fn demo(db: neo_db::Db, tenant: neo_core::TenantId, notes: Vec<Note>) -> neo_db::Result<()> {
    /// use neo_db::{BatchRepository, OnConflict, TenantIsolation};
    ///
    /// // Shared `app.notes` (`tenant_id uuid NOT NULL DEFAULT <RlsSetting::current_tenant_sql>`,
    /// // under `RlsSetting::policy_sql`): one round trip per chunk.
    /// let isolation = TenantIsolation::row_level_security();
    /// let notes_repo = BatchRepository::<Note>::new(&db, "app.notes")?;
    /// notes_repo.save_batch_for(&db, &isolation, tenant, &notes, OnConflict::Error).await?;
    ///
    /// // Schema per tenant: the same call writes `tenant_<hex>.notes`.
    /// let schemas = TenantIsolation::schema_per_tenant("tenant_")?;
    /// let notes_repo = BatchRepository::<Note>::new(&db, "notes")?;
    /// notes_repo.save_batch_for(&db, &schemas, tenant, &notes, OnConflict::Error).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`save_batch`](Self::save_batch); the resolver's, under schema per tenant; under
    /// row-level security a row the policy refuses (another tenant's `tenant_id`) is a
    /// database error and nothing of the batch is written.
    pub async fn save_batch_for(
        &self,
        db: &Db,
        isolation: &TenantIsolation,
        tenant: TenantId,
        rows: &[T],
        on_conflict: OnConflict,
    ) -> Result<u64> {
        match isolation {
            TenantIsolation::SchemaPerTenant(resolver) => {
                self.in_tenant_schema(&resolver.schema(tenant)?)?
                    .insert(db, rows, on_conflict, None)
                    .await
            }
            TenantIsolation::RowLevelSecurity(setting) => {
                self.insert(db, rows, on_conflict, Some((setting, tenant)))
                    .await
            }
        }
    }

    /// The `INSERT`s of [`save_batch`](Self::save_batch), each carrying `tenant`'s setting
    /// when given ([`save_batch_for`](Self::save_batch_for)).
    async fn insert<'c, A>(
        &self,
        exec: A,
        rows: &[T],
        on_conflict: OnConflict,
        tenant: Option<(&RlsSetting, TenantId)>,
    ) -> Result<u64>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        if rows.is_empty() {
            return Ok(0);
        }
        self.validate_batch(rows)?;
        let sql = match tenant {
            None => &self.sql.insert[on_conflict.index()],
            Some(_) => &self.sql.insert_for_tenant[on_conflict.index()],
        };
        let mut conn = Conn::open(
            exec,
            rows.len() > self.max_rows || self.pooled(),
            &self.shared,
        )
        .await?;
        let mut written = 0;
        for chunk in rows.chunks(self.max_rows) {
            let mut args = bind::<T>(chunk)?;
            if let Some((setting, tenant)) = tenant {
                args.add(setting.as_str()).map_err(sqlx::Error::Encode)?;
                args.add(tenant.as_uuid().hyphenated().to_string())
                    .map_err(sqlx::Error::Encode)?;
            }
            let query = sqlx::query_with(sql.clone(), args)
                .persistent(self.named())
                .execute(&mut *conn);
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
        let mut conn = Conn::open(
            exec,
            rows.len() > self.max_rows || self.pooled(),
            &self.shared,
        )
        .await?;
        let mut saved = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
            let query = sqlx::query_as_with::<_, T, _>(sql.clone(), args)
                .persistent(self.named())
                .fetch_all(&mut *conn);
            saved.extend(self.observe_rows("save_batch_returning", query).await?);
        }
        conn.finish().await?;
        Ok(saved)
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
        let mut conn = Conn::open(
            exec,
            unique.len() > self.max_rows || self.pooled(),
            &self.shared,
        )
        .await?;
        let mut deleted = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_scalar::<_, T::Id>(self.sql.delete_by_ids.clone())
                .persistent(self.named())
                .bind(chunk)
                .fetch_all(&mut *conn);
            deleted.extend(self.observe_rows("delete_batch", query).await?);
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
        let mut conn = Conn::open(exec, true, &self.shared).await?;
        let mut updated = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
            let query = sqlx::query_as_with::<_, T, _>(self.sql.update.clone(), args)
                .persistent(self.named())
                .fetch_all(&mut *conn);
            updated.extend(self.observe_rows("update_batch", query).await?);
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
}
