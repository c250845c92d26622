//! Partition maintenance of the deliveries (webhooks migration 20, [`crate::partition`]).

use super::{Webhooks, db_error};
use crate::{EventError, Partition, PartitionArchive, PartitionReport};
use sqlx::AssertSqlSafe;

impl Webhooks {
    /// Creates the deliveries' partitions of the current period and
    /// [`premake`](crate::PartitionConfig::premake) ahead ([`migrate`](Self::migrate) and
    /// [`maintain_partitions`](Self::maintain_partitions) call it); returns those created. DDL:
    /// run it on a `Webhooks` whose `Db` owns the tables (see [`crate::partition`]).
    ///
    /// # Errors
    /// A database error (e.g. `lock_timeout`); deliveries keep going to the `DEFAULT`
    /// partition.
    pub async fn ensure_partitions(&self) -> Result<Vec<Partition>, EventError> {
        self.inner
            .sql
            .partitioned
            .ensure(&self.inner.db, &self.inner.config.partitions)
            .await
    }

    /// Partition maintenance, for a periodic job:
    /// [`ensure_partitions`](Self::ensure_partitions), then retires each deliveries partition
    /// wholly older than the [`retention`](crate::PartitionConfig::retention) that holds no
    /// pending delivery: detached, handed to `archive` when given (with the deliveries'
    /// attempts, as rows of `webhook_delivery_attempts`), its attempts deleted, dropped (see
    /// [`crate::partition`]); then deletes the messages older than the retention that no
    /// delivery refers to any more (one row per event, not per delivery). Constant time per
    /// partition, unlike [`purge`](Self::purge), which deletes finished deliveries row by
    /// row and stays for a retention finer than a partition.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(webhooks: neo_events::Webhooks) -> Result<(), neo_events::EventError> {
    /// let report = webhooks.maintain_partitions(None).await?;
    /// for partition in &report.kept_pending {
    ///     println!("{} still holds pending deliveries", partition.table);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error, or the archive's (the partition is then attached again).
    pub async fn maintain_partitions(
        &self,
        archive: Option<&dyn PartitionArchive>,
    ) -> Result<PartitionReport, EventError> {
        let config = &self.inner.config.partitions;
        let report = self
            .inner
            .sql
            .partitioned
            .maintain(&self.inner.db, &self.inner.system, config, archive)
            .await?;
        let mut conn = self.inner.system.statement_connection().await?;
        sqlx::query(AssertSqlSafe(self.inner.sql.purge_messages.clone()))
            .persistent(self.inner.system.pooler().named_statements())
            .bind(config.retention.as_secs_f64() * 1e3)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(report)
    }

    /// The deliveries' partitions with a range, oldest first (the `DEFAULT` one is not
    /// listed).
    ///
    /// # Errors
    /// A database error.
    pub async fn partitions(&self) -> Result<Vec<Partition>, EventError> {
        self.inner.sql.partitioned.partitions(&self.inner.db).await
    }
}
