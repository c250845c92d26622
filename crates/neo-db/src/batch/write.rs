//! Batch writes: insert (with the [`OnConflict`] choice), update with optimistic versions,
//! delete; each one statement per chunk, all chunks in one transaction.

use super::{BatchRepository, Conn, OnConflict, Record, bind, unique_ids};
use crate::{Error, Result};
use sqlx::{Acquire, Postgres};
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
        if rows.is_empty() {
            return Ok(0);
        }
        self.validate_batch(rows)?;
        let sql = &self.sql.insert[on_conflict.index()];
        let mut conn = Conn::open(
            exec,
            rows.len() > self.max_rows || self.pooled(),
            &self.shared,
        )
        .await?;
        let mut written = 0;
        for chunk in rows.chunks(self.max_rows) {
            let args = bind::<T>(chunk)?;
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
