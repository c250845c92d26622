//! The delivery rows passed between storing and sending: what one attempt reads
//! ([`Target`], read in batches by [`target_loader`]) and what it writes ([`StatusUpdate`],
//! written in batches by [`write_statuses`]).

use super::WebhookConfig;
use crate::EventError;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row, SqlSafeStr, SqlStr};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// A delivery as the delivery path looks it up: its id and, when known, its `created_at`,
/// the deliveries' partition key (webhooks migration 20), with which a lookup reads one
/// partition instead of probing every partition's primary key. Jobs enqueued before the key
/// was carried name the id alone (`created_at` `None`): their lookup probes every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DeliveryKey {
    pub(super) id: i64,
    pub(super) created_at: Option<DateTime<Utc>>,
}

impl DeliveryKey {
    /// The key of a delivery whose `created_at` is known.
    pub(super) fn new(id: i64, created_at: DateTime<Utc>) -> Self {
        DeliveryKey {
            id,
            created_at: Some(created_at),
        }
    }
}

/// What the delivery needs from its rows (decoded by column name from `load_for_send`).
/// `Debug` shows neither the stored secrets nor header values (plain text without a sealer).
#[derive(Clone, sqlx::FromRow)]
pub(super) struct Target {
    pub(super) delivery_id: i64,
    /// The delivery's partition key, which its status writes name.
    pub(super) created_at: DateTime<Utc>,
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
            .field("created_at", &self.created_at)
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
/// read must be current): `sql` (`load_for_send`, prepared under `plans`) for the keys
/// naming their `created_at`, each probing only the partition holding it; `by_id`
/// (`load_for_send_by_id`) for those that do not (jobs enqueued before the key was
/// carried), which probes every partition.
pub(super) fn target_loader(
    db: &neo_db::Db,
    (sql, by_id): (String, String),
    plans: Arc<neo_db::Replanning>,
    config: &WebhookConfig,
) -> Result<neo_batch::DataLoader<DeliveryKey, Target>, EventError> {
    let db = db.clone();
    let sql = sqlx::AssertSqlSafe(sql).into_sql_str();
    let loader_config = neo_batch::LoaderConfig {
        cache: false,
        ..config.target_reads
    };
    neo_batch::DataLoader::new(loader_config, move |keys: Vec<DeliveryKey>| {
        let (db, sql, by_id, plans) = (db.clone(), sql.clone(), by_id.clone(), plans.clone());
        async move {
            let (mut ids, mut created, mut unkeyed) = (Vec::new(), Vec::new(), Vec::new());
            for key in &keys {
                match key.created_at {
                    Some(at) => {
                        ids.push(key.id);
                        created.push(at);
                    }
                    None => unkeyed.push(key.id),
                }
            }
            let mut targets = HashMap::with_capacity(keys.len());
            let mut conn = db.statement_connection().await?;
            if !ids.is_empty() {
                let (generation, text) = plans.text(&sql);
                let rows = sqlx::query(text)
                    .persistent(db.pooler().named_statements())
                    .bind(&ids)
                    .bind(&created)
                    .fetch_all(&mut *conn)
                    .await?;
                // The last row's time is the read's own on the server; the bound is per
                // delivery.
                if let Some(row) = rows.last() {
                    let took: f64 = row.try_get("server_ms")?;
                    plans.ran(generation, took / rows.len() as f64);
                }
                for row in &rows {
                    let target = Target::from_row(row).map_err(neo_db::Error::from)?;
                    targets.insert(
                        DeliveryKey::new(target.delivery_id, target.created_at),
                        target,
                    );
                }
            }
            if !unkeyed.is_empty() {
                let rows = neo_db::planned_per_call(sqlx::AssertSqlSafe(by_id))
                    .bind(&unkeyed)
                    .fetch_all(&mut *conn)
                    .await?;
                for row in &rows {
                    let target = Target::from_row(row).map_err(neo_db::Error::from)?;
                    let key = DeliveryKey {
                        id: target.delivery_id,
                        created_at: None,
                    };
                    targets.insert(key, target);
                }
            }
            conn.finish().await?;
            Ok::<_, neo_db::Error>(targets)
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
    /// The delivery's partition key: the write reads only the partitions holding the
    /// batch's deliveries.
    pub(super) created_at: DateTime<Utc>,
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
    pub(super) fn dead(target: &Target, attempted: i32, why: &str) -> Self {
        StatusUpdate {
            id: target.delivery_id,
            created_at: target.created_at,
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
/// statement), prepared under `plans` (on a connection that may name its statements: see
/// [`neo_db::Pooler::named_statements`]); each row's probe prunes the partitions by its own
/// `created_at`, so one plan serves every batch.
pub(super) async fn write_statuses(
    conn: &mut sqlx::PgConnection,
    (sql, plans, named): (&SqlStr, &neo_db::Replanning, bool),
    history: Option<AttemptHistory>,
    batch: &[StatusUpdate],
) -> Result<(), neo_db::Error> {
    let column = |f: fn(&StatusUpdate) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let (generation, text) = plans.text(sql);
    let mut query = sqlx::query(text)
        .persistent(named)
        .bind(batch.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.status).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.attempted).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.response_status).collect::<Vec<_>>())
        .bind(column(|u| u.response_body.clone()))
        .bind(batch.iter().map(|u| u.duration_ms).collect::<Vec<_>>())
        .bind(column(|u| u.error.clone()))
        .bind(batch.iter().map(|u| u.next_attempt_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|u| u.created_at).collect::<Vec<_>>());
    if let Some(history) = history {
        query = query.bind(history.kept).bind(history.excerpt_chars);
    }
    let took: f64 = query.fetch_one(&mut *conn).await?.try_get("server_ms")?;
    // The bound is per delivery.
    plans.ran(generation, took / batch.len().max(1) as f64);
    Ok(())
}
