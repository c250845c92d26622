//! Batch reads by id (`= ANY($1)`), aligned with the input ids.

use super::{BatchRepository, Conn, Record, unique_ids};
use crate::Result;
use sqlx::{Acquire, Postgres};
use std::collections::{HashMap, HashSet};

impl<T: Record> BatchRepository<T> {
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
        let mut conn = Conn::open(exec, self.pooled(), &self.shared).await?;
        let mut found: HashMap<T::Id, T> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_as::<_, T>(self.sql.select_by_ids.clone())
                .persistent(self.named())
                .bind(chunk)
                .fetch_all(&mut *conn);
            let rows = self.observe_rows("load_batch", query).await?;
            found.extend(rows.into_iter().map(|row| (row.id().clone(), row)));
        }
        conn.finish().await?;
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
        let mut conn = Conn::open(exec, self.pooled(), &self.shared).await?;
        let mut present: HashSet<T::Id> = HashSet::with_capacity(unique.len());
        for chunk in unique.chunks(self.max_rows) {
            let query = sqlx::query_scalar::<_, T::Id>(self.sql.exists_by_ids.clone())
                .persistent(self.named())
                .bind(chunk)
                .fetch_all(&mut *conn);
            present.extend(self.observe_rows("exists_batch", query).await?);
        }
        conn.finish().await?;
        Ok(ids.iter().map(|id| present.contains(id)).collect())
    }
}
