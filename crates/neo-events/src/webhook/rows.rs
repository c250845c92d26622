//! The delivery rows passed between storing and sending: what one attempt reads
//! ([`Target`], read in batches by [`target_loader`]) and what it writes ([`StatusUpdate`],
//! written in batches by [`write_statuses`]).

use super::WebhookConfig;
use crate::EventError;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What the delivery needs from its rows (decoded by column name from `load_for_send`).
/// `Debug` shows neither the stored secrets nor header values (plain text without a sealer).
#[derive(Clone, sqlx::FromRow)]
pub(super) struct Target {
    pub(super) delivery_id: i64,
    pub(super) status: String,
    pub(super) message_id: Uuid,
    pub(super) body: String,
    pub(super) endpoint_id: Uuid,
    pub(super) url: String,
    pub(super) secrets: Vec<String>,
    pub(super) overlapping: bool,
    pub(super) enabled: bool,
    pub(super) rate: Option<i32>,
    #[sqlx(json)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) fifo: bool,
    /// Not waiting for endpoint verification.
    pub(super) verified: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("delivery_id", &self.delivery_id)
            .field("status", &self.status)
            .field("message_id", &self.message_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("url", &self.url)
            .field(
                "secrets",
                &format_args!("[{} REDACTED]", self.secrets.len()),
            )
            .field("overlapping", &self.overlapping)
            .field("enabled", &self.enabled)
            .field("rate", &self.rate)
            .field("headers", &super::RedactedHeaders(&self.headers))
            .field("fifo", &self.fifo)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

/// Reads the rows of the deliveries starting together in one query (no cache: a status
/// read must be current).
pub(super) fn target_loader(
    db: &neo_db::Db,
    sql: String,
    config: &WebhookConfig,
) -> Result<neo_batch::DataLoader<i64, Target>, EventError> {
    let db = db.clone();
    let loader_config = neo_batch::LoaderConfig {
        cache: false,
        ..config.target_reads
    };
    neo_batch::DataLoader::new(loader_config, move |ids: Vec<i64>| {
        let (db, sql) = (db.clone(), sql.clone());
        async move {
            let mut conn = db.statement_connection().await?;
            let rows = neo_db::planned_per_call(sqlx::AssertSqlSafe(sql))
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?;
            conn.finish().await?;
            rows.iter()
                .map(|row| Target::from_row(row).map(|target| (target.delivery_id, target)))
                .collect::<Result<HashMap<i64, Target>, sqlx::Error>>()
                .map_err(neo_db::Error::from)
        }
    })
    .map_err(|e| EventError::Invalid {
        what: "webhook configuration",
        reason: e.to_string(),
    })
}

/// One row of the batched status write.
#[derive(Debug, Clone)]
pub(super) struct StatusUpdate {
    pub(super) id: i64,
    pub(super) status: &'static str,
    /// 1 when this update reports an attempt, 0 when it only changes the status.
    pub(super) attempted: i32,
    pub(super) response_status: Option<i32>,
    pub(super) response_body: Option<String>,
    pub(super) duration_ms: Option<i32>,
    pub(super) error: Option<String>,
    pub(super) next_attempt_at: Option<DateTime<Utc>>,
}

impl StatusUpdate {
    /// The delivery goes to the dead letters without an attempt being recorded when
    /// `attempted` is 0.
    pub(super) fn dead(id: i64, attempted: i32, why: &str) -> Self {
        StatusUpdate {
            id,
            status: "dead",
            attempted,
            response_status: None,
            response_body: None,
            duration_ms: None,
            error: Some(why.to_owned()),
            next_attempt_at: None,
        }
    }
}

/// How much of each attempt the status write keeps in the delivery's history
/// ([`WebhookConfig::attempt_history`](crate::WebhookConfig::attempt_history)).
#[derive(Debug, Clone, Copy)]
pub(super) struct AttemptHistory {
    pub(super) kept: i32,
    pub(super) excerpt_chars: i32,
}

impl AttemptHistory {
    /// `None` when no attempt is kept (the status write is then the plain `update_status`).
    pub(super) fn of(config: &crate::WebhookConfig) -> Option<Self> {
        (config.attempt_history > 0).then(|| AttemptHistory {
            kept: i32::try_from(config.attempt_history).unwrap_or(i32::MAX),
            excerpt_chars: i32::try_from(config.attempt_excerpt_chars).unwrap_or(i32::MAX),
        })
    }
}

/// Writes a batch of status updates in one statement, `sql`: `update_status`, or with
/// `history` `update_status_with_attempts` (the attempts they report kept in the same
/// statement).
pub(super) async fn write_statuses(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    history: Option<AttemptHistory>,
    batch: &[StatusUpdate],
) -> Result<(), neo_db::Error> {
    let column = |f: fn(&StatusUpdate) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let mut query = neo_db::planned_per_call(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(batch.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.status).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.attempted).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.response_status).collect::<Vec<_>>())
        .bind(column(|u| u.response_body.clone()))
        .bind(batch.iter().map(|u| u.duration_ms).collect::<Vec<_>>())
        .bind(column(|u| u.error.clone()))
        .bind(batch.iter().map(|u| u.next_attempt_at).collect::<Vec<_>>());
    if let Some(history) = history {
        query = query.bind(history.kept).bind(history.excerpt_chars);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
