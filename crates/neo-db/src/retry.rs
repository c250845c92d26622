//! Running a transaction again when PostgreSQL aborted it for a reason that goes away on a
//! second try: a serialization failure (`40001`, under `REPEATABLE READ` or `SERIALIZABLE`)
//! or being the victim the deadlock detector picked (`40P01`).
//!
//! [`Db::transaction_with_retry`] begins a transaction, runs the caller's body on it and
//! commits; when the body or the commit fails with one of those two SQLSTATEs, the whole
//! transaction is run again after a backoff (neo-resilience's exponential delay with full
//! jitter), within [`TransactionRetryConfig::max_attempts`] and
//! [`TransactionRetryConfig::budget`]. Any other error ends it at once. The body must be
//! safe to run more than once: everything it did in a failed attempt was rolled back, but
//! effects outside the database (an HTTP call, a message sent) were not.

use crate::pool::Db;
use crate::{Error, Result};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The isolation level a retried transaction runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Isolation {
    /// PostgreSQL's default: deadlock victims are retried.
    #[default]
    ReadCommitted,
    /// Serialization failures (`40001`) as well as deadlock victims are retried.
    RepeatableRead,
    /// Serialization failures (`40001`) as well as deadlock victims are retried.
    Serializable,
}

impl Isolation {
    fn set_sql(self) -> Option<&'static str> {
        match self {
            Isolation::ReadCommitted => None,
            Isolation::RepeatableRead => Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
            Isolation::Serializable => Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        }
    }
}

/// How [`Db::transaction_with_retry`] retries (`NEO_DB_TRANSACTION_RETRY__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TransactionRetryConfig {
    /// Attempts in total, the first included (1 turns retrying off).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled per attempt, with full jitter.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// No attempt starts later than this after the first one.
    #[serde(with = "humantime_serde")]
    pub budget: Duration,
    /// The isolation level each attempt runs at.
    pub isolation: Isolation,
}

impl Default for TransactionRetryConfig {
    fn default() -> Self {
        TransactionRetryConfig {
            max_attempts: 5,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(10),
            isolation: Isolation::ReadCommitted,
        }
    }
}

impl TransactionRetryConfig {
    /// The backoff in neo-resilience's terms.
    fn backoff(&self) -> neo_resilience::RetryConfig {
        neo_resilience::RetryConfig {
            max_attempts: self.max_attempts.max(1),
            initial_delay: self.initial_delay,
            max_delay: self.max_delay.max(self.initial_delay),
            multiplier: 2.0,
            jitter: neo_resilience::Jitter::Full,
            max_elapsed: Some(self.budget),
        }
    }
}

/// Whether `error` is one a new attempt of the whole transaction can get past.
fn worth_retrying(error: &Error) -> Option<&'static str> {
    match error.sqlstate() {
        Some("40001") => Some("40001"),
        Some("40P01") => Some("40P01"),
        _ => None,
    }
}

impl Db {
    /// Runs `body` in a transaction and commits it, retrying the whole transaction on a
    /// serialization failure (`40001`) or a deadlock (`40P01`) with the configuration's
    /// [`transaction_retry`](crate::DbConfig::transaction_retry) settings. See
    /// [`transaction_with_retry_using`](Db::transaction_with_retry_using).
    ///
    /// # Errors
    /// As [`transaction_with_retry_using`](Db::transaction_with_retry_using).
    pub async fn transaction_with_retry<T, F>(&self, body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut sqlx::PgConnection) -> BoxFuture<'t, Result<T>>,
    {
        let config = self.config().transaction_retry;
        self.transaction_with_retry_using(&config, body).await
    }

    /// Runs `body` in a transaction at `config.isolation` and commits it; when the body or
    /// the commit fails with `40001` or `40P01`, rolls back and runs it again after a backoff,
    /// within `config.max_attempts` and `config.budget`. Each retry is logged at WARN and
    /// counted in `neo_db_transaction_retries_total{sqlstate}`; giving up after retrying
    /// counts `neo_db_transaction_retries_exhausted_total`.
    ///
    /// The body gets the transaction's connection and returns a boxed future (clone what it
    /// needs into it):
    /// ```no_run
    /// # async fn demo(db: neo_db::Db, from: uuid::Uuid, to: uuid::Uuid) -> neo_db::Result<()> {
    /// db.transaction_with_retry(|tx| Box::pin(async move {
    ///     sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = $1").bind(from).execute(&mut *tx).await?;
    ///     sqlx::query("UPDATE accounts SET balance = balance + 10 WHERE id = $1").bind(to).execute(&mut *tx).await?;
    ///     Ok(())
    /// })).await
    /// # }
    /// ```
    ///
    /// # Errors
    /// The body's error, or the commit's, when it is not `40001`/`40P01` or the attempts
    /// or budget are spent (then the last one); beginning the transaction's error.
    pub async fn transaction_with_retry_using<T, F>(
        &self,
        config: &TransactionRetryConfig,
        mut body: F,
    ) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut sqlx::PgConnection) -> BoxFuture<'t, Result<T>>,
    {
        let backoff = config.backoff();
        let started = Instant::now();
        let mut previous = backoff.initial_delay;
        let mut attempt = 1;
        loop {
            let error = match self.attempt(config.isolation, &mut body).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let Some(sqlstate) = worth_retrying(&error) else {
                return Err(error);
            };
            let wait = backoff.delay(attempt, previous);
            if attempt >= backoff.max_attempts || started.elapsed() + wait > config.budget {
                tracing::warn!(
                    attempts = attempt,
                    sqlstate,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "transaction retries exhausted"
                );
                metrics::counter!(crate::metric_names::TRANSACTION_RETRIES_EXHAUSTED_TOTAL)
                    .increment(1);
                return Err(error);
            }
            tracing::warn!(
                attempt,
                sqlstate,
                wait_ms = wait.as_millis() as u64,
                "transaction aborted by a serialization failure or deadlock; retrying"
            );
            metrics::counter!(crate::metric_names::TRANSACTION_RETRIES_TOTAL, "sqlstate" => sqlstate)
                .increment(1);
            tokio::time::sleep(wait).await;
            previous = wait;
            attempt += 1;
        }
    }

    /// One attempt: begin, set the isolation, run the body, commit (rolled back on drop).
    async fn attempt<T, F>(&self, isolation: Isolation, body: &mut F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut sqlx::PgConnection) -> BoxFuture<'t, Result<T>>,
    {
        let mut uow = self.begin().await?;
        if let Some(sql) = isolation.set_sql() {
            sqlx::raw_sql(sql).execute(&mut **uow).await?;
        }
        let value = body(&mut uow).await?;
        uow.commit().await?;
        Ok(value)
    }
}
