//! Fan-out: dispatched events become messages, one delivery per subscribed endpoint and one
//! neo-queue job per delivery, in one transaction; FIFO endpoints get one job at a time.
//! A delivery and its job name the tenant of the event that caused them.

use super::{Webhooks, db_error};
use crate::webhook::inline::{InlineAttempt, InlineJob};
use crate::webhook::rows::{DeliveryKey, Target};
use crate::{DomainEvent, EventError};
use chrono::{DateTime, Utc};
use neo_core::{TenantId, TraceContext};
use neo_queue::{JobError, NewJob, OnDuplicate};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, watch};
use uuid::Uuid;

/// A delivery just made pending (by fan-out, replay, verification or its FIFO turn):
/// `RETURNING id, created_at, queued, endpoint_id, tenant_id, trace_context, region, replays`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::webhook) struct Pending {
    /// The delivery.
    pub(super) id: i64,
    /// Its partition key, which its job carries with the id (see [`DeliveryKey`]).
    pub(super) created_at: DateTime<Utc>,
    /// Whether it gets its job now (FIFO endpoints' deliveries wait for their turn).
    pub(super) queued: bool,
    /// Its endpoint.
    pub(super) endpoint_id: Uuid,
    /// Its tenant (its event's), which its job names too.
    pub(super) tenant_id: Option<TenantId>,
    /// Its event's trace context, which its job carries too.
    #[sqlx(json(nullable))]
    pub(super) trace_context: Option<TraceContext>,
    /// Its endpoint's region, whose job kind its job is of.
    pub(super) region: Option<String>,
    /// How often it was replayed: part of its job's unique key (see [`delivery_job_key`]).
    pub(super) replays: i32,
}

/// The unique key of a delivery's job: one job per delivery and life. A replay starts a new
/// life with a key of its own, so a replay made while the job that let the delivery die is
/// still unacknowledged (acks are batched) is not skipped as that job's duplicate.
fn delivery_job_key(delivery: i64, replays: i32) -> String {
    if replays == 0 {
        format!("webhook-delivery:{delivery}")
    } else {
        format!("webhook-delivery:{delivery}:replay-{replays}")
    }
}

impl Webhooks {
    /// Checks an event before it is published, as fan-out will: its message must fit
    /// `max_payload_bytes`.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for an oversized event.
    pub fn validate_event(&self, event: &DomainEvent) -> Result<(), EventError> {
        message_body(event, self.inner.config.max_payload_bytes).map(|_| ())
    }

    /// Records one delivery per subscribed, enabled endpoint for each event and enqueues a
    /// delivery job for each, in one transaction; returns how many deliveries were created.
    /// Handing the same events over again creates nothing new, so it is safe to use as an
    /// at-least-once [`Outbox`](crate::Outbox) handler. Events too large for
    /// `max_payload_bytes` are logged and skipped (check them first with
    /// [`validate_event`](Self::validate_event)). [`dispatch`](Self::dispatch) does the same
    /// in the outbox's own transaction, one commit per round instead of two.
    ///
    /// # Errors
    /// A database or queue error; nothing is recorded then.
    pub async fn fan_out(&self, events: &[DomainEvent]) -> Result<usize, EventError> {
        let messages = self.messages(events);
        if messages.ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.inner.system.begin().await?;
        let fanned = self.fan_out_messages(&mut tx, &messages).await?;
        tx.commit().await?;
        let created = fanned.created();
        fanned.committed();
        Ok(created)
    }

    /// [`fan_out`](Self::fan_out) in your transaction `tx` (on the webhooks' database; under
    /// row-level security a transaction of the system `Db`, since fan-out spans tenants): call
    /// [`FannedOut::committed`] once `tx` committed. First attempts made inline
    /// ([`inline_attempts`](crate::WebhookConfig::inline_attempts)) are sent at once, before
    /// the commit, so the commit's flush is not on the way to the receiver; what they learn
    /// is recorded only after [`FannedOut::committed`]. When `tx` does not commit (the
    /// [`FannedOut`] is dropped), nothing is recorded: the events are handed over again and
    /// sent again (at least once, as a receiver must expect anyway).
    ///
    /// # Errors
    /// A database or queue error; roll `tx` back then.
    pub async fn fan_out_in(
        &self,
        tx: &mut neo_db::UnitOfWork,
        events: &[DomainEvent],
    ) -> Result<FannedOut, EventError> {
        let messages = self.messages(events);
        if messages.ids.is_empty() {
            return Ok(FannedOut::nothing());
        }
        self.fan_out_messages(tx, &messages).await
    }

    /// The messages of the events that fit `max_payload_bytes`; the others are logged.
    fn messages(&self, events: &[DomainEvent]) -> Messages {
        let mut m = Messages {
            ids: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            tenants: Vec::with_capacity(events.len()),
            bodies: Vec::with_capacity(events.len()),
            traces: Vec::with_capacity(events.len()),
        };
        for event in events {
            match message_body(event, self.inner.config.max_payload_bytes) {
                Ok(body) => {
                    m.ids.push(Uuid::from(event.id()));
                    m.types.push(event.event_type().to_owned());
                    m.tenants.push(event.tenant_id());
                    m.bodies.push(body);
                    m.traces.push(event.trace_context().cloned().map(Json));
                }
                Err(error) => {
                    metrics::counter!(crate::metric_names::WEBHOOK_REFUSED_EVENTS_TOTAL)
                        .increment(1);
                    tracing::error!(event_id = %event.id(), %error, "event not sent to webhooks");
                }
            }
        }
        m
    }

    async fn fan_out_messages(
        &self,
        tx: &mut neo_db::UnitOfWork,
        m: &Messages,
    ) -> Result<FannedOut, EventError> {
        let span = tracing::info_span!(
            "neo_events.webhook.fan_out",
            events = m.ids.len(),
            tenant = tracing::field::Empty,
        );
        crate::tenancy::record_tenant(&span, m.tenants.iter().copied());
        tracing::Instrument::instrument(self.fan_out_rows(tx, m), span).await
    }

    async fn fan_out_rows(
        &self,
        tx: &mut neo_db::UnitOfWork,
        m: &Messages,
    ) -> Result<FannedOut, EventError> {
        // Events that may fit the free inline slots: the statement returns what sending
        // their deliveries reads, sparing the inline attempts a read.
        let read_targets = m.ids.len() <= self.inner.inline.available_permits();
        let sql = if read_targets {
            &self.inner.sql.fan_out_targets
        } else {
            &self.inner.sql.fan_out
        };
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
            .persistent(self.inner.system.pooler().named_statements())
            .bind(&m.ids)
            .bind(&m.types)
            .bind(&m.tenants)
            .bind(&m.bodies)
            .bind(&m.traces)
            .fetch_all(&mut ***tx)
            .await
            .map_err(db_error)?;
        let created = rows
            .iter()
            .map(Pending::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        let (commit, committed) = watch::channel(false);
        let jobs = match self.inline_slots(&created) {
            Some(slots) => {
                let targets = if read_targets {
                    rows.iter()
                        .map(|row| Target::from_row(row).map(Some))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db_error)?
                } else {
                    vec![None; created.len()]
                };
                let due = crate::webhook::from_now(self.inner.config.inline_backstop())
                    .unwrap_or_else(|| Utc::now() + chrono::TimeDelta::days(1));
                // Built before the attempts start, which are told their jobs' ids: a failed
                // attempt moves its job to its retry's time.
                let jobs = self.delivery_jobs(&created, Some(due))?;
                // Sent now, while the jobs are enqueued and the transaction commits.
                self.attempt_inline(&created, targets, slots, due, &jobs, &committed);
                Some(jobs)
            }
            None => None,
        };
        self.enqueue_created_with(tx, &created, jobs).await?;
        Ok(FannedOut {
            created: created.len(),
            commit: Some(commit),
        })
    }

    /// One inline slot per queued (non-FIFO) delivery, when all of them fit and none is to
    /// an endpoint with a region (only that region's workers send those).
    fn inline_slots(&self, rows: &[Pending]) -> Option<Vec<OwnedSemaphorePermit>> {
        if rows.iter().any(|r| r.queued && r.region.is_some()) {
            return None;
        }
        let wanted = rows.iter().filter(|r| r.queued).count();
        if wanted == 0 || wanted > self.inner.config.inline_attempts {
            return None;
        }
        let mut slots = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            // Dropping the ones taken gives them back when not all fit.
            slots.push(Arc::clone(&self.inner.inline).try_acquire_owned().ok()?);
        }
        Some(slots)
    }

    /// Makes the first attempt of each queued delivery in a task of its own, now, recording
    /// it once `committed` says the deliveries exist; their `jobs` (due at `job_due`, one per
    /// queued delivery in order) finish what these leave.
    fn attempt_inline(
        &self,
        rows: &[Pending],
        targets: Vec<Option<Target>>,
        slots: Vec<OwnedSemaphorePermit>,
        job_due: DateTime<Utc>,
        jobs: &[NewJob],
        committed: &watch::Receiver<bool>,
    ) {
        let queued = rows.iter().zip(targets).filter(|(r, _)| r.queued);
        for (((row, target), slot), job) in queued.zip(slots).zip(jobs) {
            let (webhooks, key, trace) = (
                self.clone(),
                DeliveryKey::new(row.id, row.created_at),
                row.trace_context.clone(),
            );
            let job = InlineJob {
                id: job.id(),
                due: job_due,
                tenant: row.tenant_id,
            };
            let inline = InlineAttempt {
                job,
                committed: committed.clone(),
            };
            let mut committed = committed.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match webhooks.attempt(key, 1, Some(inline), target, trace).await {
                    // Not sent: the endpoint's rate limit or breaker said when to come back,
                    // which its job does rather than wait out its backstop time.
                    Err(JobError::Snooze(wait)) => {
                        let at = crate::webhook::from_now(wait).unwrap_or_else(Utc::now);
                        if committed.wait_for(|done| *done).await.is_ok() {
                            webhooks.move_inline_job(&job, at).await;
                        }
                    }
                    // Failed and recorded (its job was moved to the retry's time), or not
                    // recorded: the job does it.
                    Err(error) => {
                        tracing::debug!(
                            delivery = key.id,
                            ?error,
                            "inline attempt left to its job"
                        );
                    }
                    Ok(()) => {}
                }
            });
        }
    }

    /// Enqueues jobs for deliveries just made pending: the queued
    /// ones directly, and the head of each FIFO endpoint among the others.
    pub(in crate::webhook) async fn enqueue_created(
        &self,
        tx: &mut neo_db::UnitOfWork,
        rows: &[Pending],
    ) -> Result<(), EventError> {
        self.enqueue_created_with(tx, rows, None).await
    }

    /// [`enqueue_created`](Self::enqueue_created), with the queued ones' `jobs` when they
    /// were built already (for inline attempts, [`delivery_jobs`](Self::delivery_jobs)).
    async fn enqueue_created_with(
        &self,
        tx: &mut neo_db::UnitOfWork,
        rows: &[Pending],
        jobs: Option<Vec<NewJob>>,
    ) -> Result<(), EventError> {
        let jobs = match jobs {
            Some(jobs) => jobs,
            None => self.delivery_jobs(rows, None)?,
        };
        self.enqueue_jobs(tx, jobs).await?;
        let mut fifo: Vec<Uuid> = rows
            .iter()
            .filter(|r| !r.queued)
            .map(|r| r.endpoint_id)
            .collect();
        fifo.sort_unstable();
        fifo.dedup();
        for endpoint in fifo {
            self.advance_fifo(tx, endpoint).await?;
        }
        Ok(())
    }

    /// Whether statements may be prepared under a name on a transaction of either `Db` (the
    /// FIFO turn runs in fan-out's, on the system one, and in replay's, on the application
    /// one).
    fn named_on_either(&self) -> bool {
        self.inner.db.pooler().named_statements() && self.inner.system.pooler().named_statements()
    }

    /// Gives a FIFO endpoint's oldest pending delivery its job, unless it has one; the
    /// endpoint row lock serializes this per endpoint.
    pub(in crate::webhook) async fn advance_fifo(
        &self,
        tx: &mut neo_db::UnitOfWork,
        endpoint: Uuid,
    ) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.lock_endpoint.clone()))
            .persistent(self.named_on_either())
            .bind(endpoint)
            .execute(&mut ***tx)
            .await
            .map_err(db_error)?;
        let head: Vec<Pending> = sqlx::query_as(AssertSqlSafe(self.inner.sql.fifo_head.clone()))
            .persistent(self.named_on_either())
            .bind(endpoint)
            .fetch_all(&mut ***tx)
            .await
            .map_err(db_error)?;
        let jobs = self.delivery_jobs(&head, None)?;
        self.enqueue_jobs(tx, jobs).await
    }

    /// One job per queued delivery (FIFO ones wait for their turn), naming the delivery's
    /// tenant and carrying its trace context; with `inline`, jobs due then whose payload says
    /// their delivery's first attempt is made inline (the job's attempt 1 is the delivery's
    /// 2nd).
    fn delivery_jobs(
        &self,
        deliveries: &[Pending],
        inline: Option<DateTime<Utc>>,
    ) -> Result<Vec<NewJob>, EventError> {
        let attempts = self.inner.config.max_attempts();
        let jobs = deliveries
            .iter()
            .filter(|delivery| delivery.queued)
            .map(|delivery| {
                let (id, tenant) = (delivery.id, delivery.tenant_id);
                let kind = self.job_kind(delivery.region.as_deref());
                let job = match inline {
                    None => NewJob::new(&kind, &DeliveryJob::new(delivery, false))?
                        .max_attempts(attempts),
                    Some(due) => NewJob::new(&kind, &DeliveryJob::new(delivery, true))?
                        .max_attempts((attempts - 1).max(1))
                        .run_at(due),
                }
                .unique_key(delivery_job_key(id, delivery.replays))
                // The event's context, not the dispatch round's the job was made in.
                .trace_context(delivery.trace_context.clone());
                Ok(match tenant {
                    Some(tenant) => job.tenant_id(tenant),
                    None => job,
                })
            })
            .collect::<Result<Vec<_>, neo_queue::Error>>()?;
        Ok(jobs)
    }

    /// Enqueues delivery `jobs` in `tx`.
    async fn enqueue_jobs(
        &self,
        tx: &mut neo_db::UnitOfWork,
        jobs: Vec<NewJob>,
    ) -> Result<(), EventError> {
        // Each job names its delivery's tenant: in one call they may be several tenants'
        // (fan-out spans tenants), which a queue under row-level security takes this way.
        self.inner
            .queue
            .enqueue_across_tenants(&mut ***tx, jobs, OnDuplicate::Skip)
            .await?;
        Ok(())
    }
}

/// A delivery job's payload: the delivery's id and its `created_at`, the partition key its
/// lookups name (jobs enqueued before it was carried have none: see
/// [`DeliveryJob::key`]); `inline` when the delivery's first attempt is made inline (the
/// job's attempt 1 is the delivery's 2nd).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(in crate::webhook) struct DeliveryJob {
    delivery: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    inline: bool,
}

impl DeliveryJob {
    fn new(delivery: &Pending, inline: bool) -> Self {
        DeliveryJob {
            delivery: delivery.id,
            created_at: Some(delivery.created_at),
            inline,
        }
    }

    /// Decodes a job's payload; `None` when it names no delivery.
    pub(in crate::webhook) fn decode(payload: &serde_json::Value) -> Option<Self> {
        let delivery = payload.get("delivery")?.as_i64()?;
        Some(DeliveryJob {
            delivery,
            // Absent in the jobs enqueued before the key was carried; unreadable counts as
            // absent (the lookup by id alone still finds the delivery).
            created_at: payload
                .get("created_at")
                .and_then(|at| serde_json::from_value(at.clone()).ok()),
            inline: payload.get("inline") == Some(&serde_json::Value::Bool(true)),
        })
    }

    /// The delivery's key.
    pub(in crate::webhook) fn key(&self) -> DeliveryKey {
        DeliveryKey {
            id: self.delivery,
            created_at: self.created_at,
        }
    }

    /// Whether the delivery's first attempt was made inline.
    pub(in crate::webhook) fn inline(&self) -> bool {
        self.inline
    }
}

/// The messages of a fan-out, as the statement binds them.
struct Messages {
    ids: Vec<Uuid>,
    types: Vec<String>,
    tenants: Vec<Option<TenantId>>,
    bodies: Vec<String>,
    traces: Vec<Option<Json<TraceContext>>>,
}

/// Deliveries recorded by [`Webhooks::fan_out_in`] in a transaction not yet committed. Call
/// [`committed`](Self::committed) after the commit; dropping it instead tells its inline
/// attempts that the deliveries do not exist (nothing of theirs is recorded).
#[derive(Debug)]
#[must_use = "call committed() after the transaction commits"]
pub struct FannedOut {
    created: usize,
    commit: Option<watch::Sender<bool>>,
}

impl FannedOut {
    fn nothing() -> Self {
        FannedOut {
            created: 0,
            commit: None,
        }
    }

    /// Deliveries created.
    pub fn created(&self) -> usize {
        self.created
    }

    /// The transaction committed: inline attempts record what they learnt.
    pub fn committed(mut self) {
        if let Some(commit) = self.commit.take() {
            let _ = commit.send(true);
        }
        metrics::counter!(crate::metric_names::WEBHOOK_DELIVERIES_CREATED_TOTAL)
            .increment(self.created as u64);
    }
}

/// The message body: `{"type", "timestamp", "data"}`, as Standard Webhooks suggests.
fn message_body(event: &DomainEvent, max: usize) -> Result<String, EventError> {
    let body = serde_json::to_string(&serde_json::json!({
        "type": event.event_type(),
        "timestamp": event.occurred_at(),
        "data": event.payload(),
    }))
    .map_err(|e| EventError::Invalid {
        what: "event payload",
        reason: e.to_string(),
    })?;
    if body.len() > max {
        return Err(EventError::Invalid {
            what: "event payload",
            reason: format!(
                "the webhook message is {} bytes, more than max_payload_bytes ({max})",
                body.len()
            ),
        });
    }
    Ok(body)
}
