//! The sampler's database readings on demand, for an operations console: the same bounded
//! statements ([`crate::queries`]) under the same `statement_timeout`, without the lease and
//! without setting gauges.

use crate::queries::{self, LockReading, OutboxReading, QueueReading, WebhookReading};
use crate::{ObserveConfig, Result};
use neo_db::{Db, UnitOfWork};

/// Reads queue, outbox, webhook and lock readings now, through `db`, with `config`'s caps and
/// timeout; cheap to clone.
#[derive(Debug, Clone)]
pub struct Readings {
    db: Db,
    config: ObserveConfig,
}

impl Readings {
    /// Readings through `db`.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for invalid settings.
    pub fn new(db: &Db, config: ObserveConfig) -> Result<Self> {
        config.validate()?;
        Ok(Readings {
            db: db.clone(),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }

    async fn begin(&self) -> Result<UnitOfWork> {
        let mut uow = self.db.begin().await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .persistent(false)
            .bind(format!(
                "{}ms",
                self.config.statement_timeout.as_millis().max(1)
            ))
            .execute(&mut **uow)
            .await?;
        Ok(uow)
    }

    /// Capped counts per state and the oldest due job of the queue in `schema`.
    ///
    /// # Errors
    /// A database error (a missing table, the timeout).
    pub async fn queue(&self, schema: &str) -> Result<QueueReading> {
        let mut uow = self.begin().await?;
        let reading = queries::queue(&mut uow, schema, self.config.count_cap).await?;
        uow.commit().await?;
        Ok(reading)
    }

    /// Pending events (capped) and lag of the outbox in `schema`.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox(&self, schema: &str) -> Result<OutboxReading> {
        let mut uow = self.begin().await?;
        let reading = queries::outbox(&mut uow, schema, self.config.count_cap).await?;
        uow.commit().await?;
        Ok(reading)
    }

    /// Seconds since the outbox in `schema` last marked an event dispatched (`None` when it
    /// never did, or has purged them all); read through its `processed_at` index.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_last_dispatch(&self, schema: &str) -> Result<Option<f64>> {
        let t =
            neo_db::TableName::parse(&format!("{}.outbox", neo_db::Schema::new(schema)?.as_str()))?;
        let mut uow = self.begin().await?;
        let age: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT extract(epoch FROM now() - max(processed_at))::float8 FROM {t} \
             WHERE processed_at IS NOT NULL"
        )))
        .persistent(false)
        .fetch_one(&mut **uow)
        .await?;
        uow.commit().await?;
        Ok(age.map(|a| a.max(0.0)))
    }

    /// Endpoint health, disabled endpoints and dead deliveries of the webhooks in `schema`.
    ///
    /// # Errors
    /// A database error.
    pub async fn webhooks(&self, schema: &str) -> Result<WebhookReading> {
        let mut uow = self.begin().await?;
        let reading = queries::webhooks(&mut uow, schema, &self.config).await?;
        uow.commit().await?;
        Ok(reading)
    }

    /// Sessions waiting for a lock now, and the longest wait.
    ///
    /// # Errors
    /// A database error.
    pub async fn locks(&self) -> Result<LockReading> {
        let mut uow = self.begin().await?;
        let reading = queries::locks(&mut uow).await?;
        uow.commit().await?;
        Ok(reading)
    }
}
