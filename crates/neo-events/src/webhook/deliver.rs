//! Sending one delivery: gates (endpoint enabled, rate limit, breaker), the signed request,
//! and what its answer means for the delivery, the endpoint and the job.

use super::http::{parse_retry_after, read_capped, transport_error};
use super::inline::{InlineAttempt, InlineJob};
use super::rows::{AttemptHistory, DeliveryKey, StatusUpdate, Target, write_statuses};
use super::store::DeliveryJob;
use super::store::Webhooks;
use super::{OperationalEvent, lock};
use crate::{EventError, WebhookSecret, sign};
use chrono::Utc;
use neo_core::TraceContext;
use neo_queue::{Job, JobError, Worker};
use neo_resilience::{BreakerState, CircuitBreaker, RateLimitConfig, RateLimiter};
use sqlx::AssertSqlSafe;
use sqlx::SqlSafeStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use uuid::Uuid;

/// What one attempt produced.
struct Answer {
    status: Option<u16>,
    body: Option<String>,
    retry_after: Option<Duration>,
    error: Option<String>,
    took: Duration,
    /// The request went out (false when it was refused before sending: a stored URL that
    /// does not parse, an address the policy refuses).
    sent: bool,
}

impl Answer {
    fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// What the attempt says about the endpoint's health, for its breaker: `Some(false)` for
    /// a sign it may be down (no answer: refused, timed out, broken off; or 5xx, 408, 429),
    /// `Some(true)` for an answer showing it is up (2xx, and 3xx/4xx: it answered on
    /// purpose), `None` when nothing was sent.
    fn endpoint_up(&self) -> Option<bool> {
        if !self.sent {
            return None;
        }
        if self.delivered() {
            return Some(true);
        }
        Some(match self.status {
            Some(status) if self.error.is_none() => {
                !(status >= 500 || status == 408 || status == 429)
            }
            // No answer, or one that broke off.
            _ => false,
        })
    }
}

impl Webhooks {
    /// Registers the delivery handler (kind `config.job_kind`) on a neo-queue worker, for
    /// the endpoints without a region (a region's: [`handle_region`](Self::handle_region)).
    /// The worker's `concurrency` bounds deliveries in flight across all endpoints.
    #[must_use]
    pub fn handle(&self, worker: Worker) -> Worker {
        self.handle_kind(worker, &self.inner.config.job_kind)
    }

    /// Registers the delivery handler on `worker` for jobs of `kind` (a region's, or the
    /// default one).
    pub(in crate::webhook) fn handle_kind(&self, worker: Worker, kind: &str) -> Worker {
        let idle = self.inner.config.pool_max_idle_per_host;
        if worker.concurrency() > idle {
            tracing::warn!(
                concurrency = worker.concurrency(),
                pool_max_idle_per_host = idle,
                "the worker runs more deliveries at once than the HTTP pool keeps connections \
                 per host: raise pool_max_idle_per_host, or connections to busy endpoints are \
                 closed and reopened"
            );
        }
        let webhooks = self.clone();
        worker.handle(kind, move |job| {
            let webhooks = webhooks.clone();
            async move { webhooks.deliver(job).await }
        })
    }

    /// One delivery job, in a `neo_events.webhook.deliver` span naming the delivery and its
    /// tenant.
    async fn deliver(&self, job: Job) -> Result<(), JobError> {
        let span = tracing::info_span!(
            "neo_events.webhook.deliver",
            delivery = tracing::field::Empty,
            tenant = tracing::field::Empty,
        );
        if let Some(id) = job
            .payload
            .get("delivery")
            .and_then(serde_json::Value::as_i64)
        {
            span.record("delivery", id);
        }
        crate::tenancy::record_tenant(&span, [job.tenant_id().ok().flatten()]);
        tracing::Instrument::instrument(self.deliver_job(job), span).await
    }

    async fn deliver_job(&self, job: Job) -> Result<(), JobError> {
        let payload = DeliveryJob::decode(&job.payload)
            .ok_or_else(|| JobError::permanent("the job names no delivery"))?;
        // A delivery whose first attempt fan-out made inline: this job's attempts come after.
        self.attempt(
            payload.key(),
            job.attempt + i32::from(payload.inline()),
            None,
            None,
            job.trace_context,
        )
        .await
    }

    /// Attempt number `attempt` of the delivery `key` names (with its `created_at`, its rows
    /// are read and written in its partition alone). `inline` is set for an inline first
    /// attempt: it may be sent before its delivery committed, and records nothing unless it
    /// did; when it fails with retries left, the retry is its job. `read` is its rows when
    /// the caller read them already (fan-out, in the statement that made it). `trace` is the
    /// trace context of the delivery's event: the attempt runs in a
    /// `neo_events.webhook.delivery` span linked to it, and sends it as `traceparent` (and
    /// `tracestate`) with [`send_trace_context`](crate::WebhookConfig::send_trace_context).
    pub(in crate::webhook) async fn attempt(
        &self,
        key: DeliveryKey,
        attempt: i32,
        inline: Option<InlineAttempt>,
        read: Option<Target>,
        trace: Option<TraceContext>,
    ) -> Result<(), JobError> {
        let span = tracing::info_span!(
            "neo_events.webhook.delivery",
            delivery.id = key.id,
            delivery.attempt = attempt,
            link.traceparent = tracing::field::Empty,
        );
        // Linked only when the span exists: inside a disabled one, the link would land on
        // whatever span is current.
        if !span.is_disabled()
            && let Some(context) = &trace
        {
            span.record("link.traceparent", tracing::field::display(context));
            span.in_scope(|| neo_core::trace::link_current(context));
        }
        self.attempt_in_span(key, attempt, inline, read, trace.as_ref())
            .instrument(span)
            .await
    }

    /// [`attempt`](Self::attempt), inside its span.
    async fn attempt_in_span(
        &self,
        key: DeliveryKey,
        attempt: i32,
        mut inline: Option<InlineAttempt>,
        read: Option<Target>,
        trace: Option<&TraceContext>,
    ) -> Result<(), JobError> {
        if read.is_none()
            && let Some(inline) = inline.as_mut()
            && !inline.committed().await
        {
            // Its rows are read on another connection, so only once they committed.
            return Ok(());
        }
        let target = match read {
            Some(target) => target,
            None => match self.target(key).await.map_err(JobError::retry)? {
                Some(target) => target,
                // The endpoint (and its deliveries) were deleted.
                None => return Ok(()),
            },
        };
        if target.status != "pending" {
            return Ok(()); // delivered or dead already: a duplicate job
        }
        if !target.enabled {
            if let Some(inline) = inline.as_mut()
                && !inline.committed().await
            {
                return Ok(());
            }
            return self
                .finish(
                    &target,
                    StatusUpdate::dead(&target, 0, "the endpoint is disabled"),
                )
                .await;
        }
        if !target.verified {
            // Re-pointed after this job was made: the delivery waits for the verification,
            // which gives it a job again.
            return self
                .wait_for_verification(target.delivery_id, target.created_at)
                .await
                .map_err(JobError::retry);
        }
        if let Some(wait) = self.rate_limited(target.endpoint_id, target.rate) {
            return Err(JobError::Snooze(wait));
        }
        let breaker = self.breaker(target.endpoint_id);
        let permit = match breaker.try_acquire() {
            Ok(permit) => permit,
            Err(refusal) => {
                let wait = refusal
                    .retry_after()
                    .unwrap_or(self.inner.config.breaker.open_for);
                return Err(JobError::Snooze(wait));
            }
        };
        let answer = self.send(&target, trace).await;
        let was_open = breaker.state() == BreakerState::Open;
        match answer.endpoint_up() {
            Some(up) => permit.record(up),
            None => drop(permit), // not counted
        }
        if !was_open && breaker.state() == BreakerState::Open {
            self.announce(OperationalEvent::EndpointFailing {
                endpoint_id: target.endpoint_id,
                last_error: describe(&answer),
            });
        }
        metrics::histogram!(crate::metric_names::WEBHOOK_ATTEMPT_SECONDS)
            .record(answer.took.as_secs_f64());
        let inline_job = match inline.as_mut() {
            Some(inline) => {
                if !inline.committed().await {
                    // Sent, but its delivery was rolled back: the event is handed over again.
                    tracing::debug!(
                        delivery = target.delivery_id,
                        "inline attempt sent, fan-out rolled back"
                    );
                    return Ok(());
                }
                Some(inline.job)
            }
            None => None,
        };
        self.conclude(attempt, inline_job, &target, answer).await
    }

    /// Records the attempt and decides the job's fate; `inline_job` is the job (and the time
    /// it is due) of an attempt made inline, which makes the retry.
    async fn conclude(
        &self,
        attempt: i32,
        inline_job: Option<InlineJob>,
        target: &Target,
        answer: Answer,
    ) -> Result<(), JobError> {
        let id = target.delivery_id;
        let mut update = StatusUpdate {
            id,
            created_at: target.created_at,
            status: "pending",
            attempted: 1,
            response_status: answer.status.map(i32::from),
            response_body: answer.body.clone(),
            duration_ms: Some(i32::try_from(answer.took.as_millis()).unwrap_or(i32::MAX)),
            error: answer.error.clone(),
            next_attempt_at: None,
        };
        if answer.delivered() {
            update.status = "delivered";
            self.finish(target, update).await?;
            self.retire_inline_job(inline_job.as_ref()).await;
            metrics::counter!(crate::metric_names::WEBHOOK_DELIVERED_TOTAL).increment(1);
            return Ok(());
        }
        let reason = describe(&answer);
        if answer.status == Some(410) {
            let why = "the endpoint answered 410 Gone";
            let mut conn = self
                .inner
                .system
                .statement_connection()
                .await
                .map_err(JobError::retry)?;
            sqlx::query(AssertSqlSafe(self.inner.sql.set_enabled.clone()))
                .persistent(self.inner.system.pooler().named_statements())
                .bind(target.endpoint_id)
                .bind(false)
                .bind(Some(why))
                .execute(&mut *conn)
                .await
                .map_err(JobError::retry)?;
            conn.finish().await.map_err(JobError::retry)?;
            update.status = "dead";
            update.error = Some(why.to_owned());
            self.finish(target, update).await?;
            self.retire_inline_job(inline_job.as_ref()).await;
            self.announce(OperationalEvent::EndpointDisabled {
                endpoint_id: target.endpoint_id,
                reason: why.to_owned(),
            });
            return Ok(());
        }
        let Some(scheduled) = self.inner.config.retry_delay(attempt) else {
            update.status = "dead";
            update.error = Some(reason.clone());
            self.finish(target, update).await?;
            self.retire_inline_job(inline_job.as_ref()).await;
            metrics::counter!(crate::metric_names::WEBHOOK_DEAD_TOTAL).increment(1);
            self.announce(OperationalEvent::DeliveryExhausted {
                delivery_id: id,
                endpoint_id: target.endpoint_id,
                message_id: target.message_id,
                last_error: reason,
            });
            return Ok(());
        };
        // A server that says when to come back is believed, within bounds.
        let delay = match answer.retry_after {
            Some(after) if matches!(answer.status, Some(429 | 503)) => {
                after.min(self.inner.config.max_retry_after)
            }
            _ => scheduled,
        };
        let retry_at = super::from_now(delay);
        // An inline attempt's job, already enqueued, makes the retry: moved from its backstop
        // time to the retry's (sooner by the schedule, or later by a `Retry-After`) once the
        // attempt is recorded, so that the retry cannot run before this record and have its
        // outcome overwritten by it.
        let (next, move_job) = match (inline_job, retry_at) {
            (Some(job), Some(at)) => (Some(at), Some((job, at))),
            (Some(job), None) => (Some(job.due), None),
            (None, at) => (at, None),
        };
        update.next_attempt_at = next;
        self.record(update).await?;
        if let Some((job, at)) = move_job {
            self.move_inline_job(&job, at).await;
        }
        metrics::counter!(crate::metric_names::WEBHOOK_RETRIES_TOTAL).increment(1);
        Err(JobError::RetryIn(reason, delay))
    }

    /// Withdraws the job of an inline attempt that settled its delivery (delivered, or dead):
    /// nothing is left for it to do, and nothing of it is kept. Withdrawals go in batches
    /// ([`withdrawals`](crate::WebhookConfig::withdrawals): one statement, and one commit, per
    /// tenant for the attempts settling together). Best effort: a job left behind finds its
    /// delivery settled when it runs, and does nothing.
    async fn retire_inline_job(&self, inline_job: Option<&InlineJob>) {
        let Some(job) = inline_job else {
            return;
        };
        let writer = self
            .inner
            .withdrawals
            .get_or_try_init(|| async {
                let queue = self.inner.queue.clone();
                neo_batch::WriteBatcher::new(
                    self.inner.config.withdrawals,
                    move |batch: Vec<InlineJob>| {
                        let queue = queue.clone();
                        async move { super::inline::withdraw(&queue, &batch).await }
                    },
                )
            })
            .await;
        let withdrawn = match writer {
            Ok(writer) => writer.submit(*job).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = withdrawn {
            tracing::debug!(job = %job.id, %error, "a settled inline attempt's job is left to run");
        }
    }

    /// Moves an inline attempt's job to `at`; whether it moved (it does not when a worker
    /// claimed it already, or the move failed: then it keeps its backstop time).
    pub(in crate::webhook) async fn move_inline_job(
        &self,
        job: &InlineJob,
        at: chrono::DateTime<Utc>,
    ) -> bool {
        match job
            .queue(&self.inner.queue)
            .reschedule(&[(job.id, at)])
            .await
        {
            Ok(moved) => moved.contains(&job.id),
            Err(error) => {
                tracing::warn!(job = %job.id, %error, "inline attempt's retry left at its backstop time");
                false
            }
        }
    }

    async fn target(&self, key: DeliveryKey) -> Result<Option<Target>, EventError> {
        self.inner
            .targets
            .load(key)
            .await
            .map_err(|e| EventError::Handler(e.to_string()))
    }

    /// Some(wait) when the endpoint's rate limit has no slot now.
    fn rate_limited(&self, endpoint: Uuid, rate: Option<i32>) -> Option<Duration> {
        let per_second = u32::try_from(rate?).ok().filter(|r| *r > 0)?;
        let limiter = {
            let mut limiters = lock(&self.inner.limiters);
            match limiters.get(&endpoint) {
                Some((r, limiter)) if *r == per_second => limiter.clone(),
                _ => {
                    let config = RateLimitConfig {
                        per_second,
                        burst: per_second,
                        max_wait: Duration::ZERO,
                    };
                    let limiter = RateLimiter::new(config).ok()?;
                    limiters.insert(endpoint, (per_second, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.try_acquire().err().map(|refusal| {
            refusal
                .retry_after()
                .unwrap_or(Duration::from_millis(100))
                .max(Duration::from_millis(1))
        })
    }

    /// The state of each endpoint breaker this instance holds (for the metrics sampler).
    pub fn breaker_states(&self) -> Vec<(Uuid, BreakerState)> {
        lock(&self.inner.breakers)
            .iter()
            .map(|(endpoint, breaker)| (*endpoint, breaker.state()))
            .collect()
    }

    fn breaker(&self, endpoint: Uuid) -> CircuitBreaker {
        let mut breakers = lock(&self.inner.breakers);
        breakers
            .entry(endpoint)
            .or_insert_with(|| {
                CircuitBreaker::labelled(
                    format!("webhook-endpoint-{endpoint}"),
                    // One metric series for every endpoint's breaker, not one per endpoint.
                    "webhook-endpoint",
                    self.inner.config.endpoint_breaker(),
                )
                .unwrap_or_else(|_| {
                    unreachable!("the breaker settings were validated in Webhooks::new")
                })
            })
            .clone()
    }

    /// One signed POST; never fails, the answer says what happened.
    async fn send(&self, target: &Target, trace: Option<&TraceContext>) -> Answer {
        let started = Instant::now();
        let failed = |error: String| Answer {
            status: None,
            body: None,
            retry_after: None,
            error: Some(error),
            took: started.elapsed(),
            sent: false,
        };
        let url = match reqwest::Url::parse(&target.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("stored URL does not parse: {e}")),
        };
        if let Err(error) = self.inner.config.addresses.check_url(&url) {
            return failed(error.to_string());
        }
        let take = if target.overlapping { 2 } else { 1 };
        let mut secrets: Vec<WebhookSecret> = Vec::with_capacity(take);
        for stored in target.secrets.iter().take(take) {
            match self.read_secret(target.endpoint_id, stored).await {
                Ok(secret) => secrets.extend(WebhookSecret::parse(&secret).ok()),
                Err(error) => return failed(error.to_string()),
            }
        }
        let headers = match self.read_headers(target.endpoint_id, &target.headers).await {
            Ok(headers) => headers,
            Err(error) => return failed(error.to_string()),
        };
        let refs: Vec<&WebhookSecret> = secrets.iter().collect();
        let signed = sign(
            &refs,
            &target.message_id.to_string(),
            Utc::now().timestamp(),
            target.body.as_bytes(),
        );
        let mut request = self
            .inner
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers.iter() {
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        if self.inner.config.send_trace_context
            && let Some(context) = trace
        {
            // Set after the endpoint's own headers: the event's context wins.
            request = request.header("traceparent", context.traceparent());
            if let Some(state) = context.tracestate() {
                request = request.header("tracestate", state);
            }
        }
        let response = match request.body(target.body.clone()).send().await {
            Ok(response) => response,
            Err(error) => {
                return Answer {
                    sent: true,
                    ..failed(transport_error(&error))
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        match read_capped(response, self.inner.config.max_response_body).await {
            Ok(body) => Answer {
                status: Some(status),
                body: Some(body),
                retry_after,
                error: None,
                took: started.elapsed(),
                sent: true,
            },
            Err(error) => Answer {
                status: Some(status),
                retry_after,
                sent: true,
                ..failed(format!(
                    "reading the answer failed: {}",
                    transport_error(&error)
                ))
            },
        }
    }

    /// The status write's statement and what it keeps of each attempt: with
    /// [`attempt_history`](crate::WebhookConfig::attempt_history) 0, the plain update.
    fn status_write(&self) -> (&str, Option<AttemptHistory>) {
        match AttemptHistory::of(&self.inner.config) {
            Some(history) => (&self.inner.sql.update_status_with_attempts, Some(history)),
            None => (&self.inner.sql.update_status, None),
        }
    }

    /// Writes an update; when a FIFO endpoint's delivery is done, in one transaction with
    /// queueing the endpoint's next delivery, so exactly one is in flight.
    async fn finish(&self, target: &Target, update: StatusUpdate) -> Result<(), JobError> {
        if !target.fifo || update.status == "pending" {
            return self.record(update).await;
        }
        let advance = async {
            let mut tx = self.inner.system.begin().await?;
            let (sql, history) = self.status_write();
            let sql = sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str();
            let named = self.inner.system.pooler().named_statements();
            let statement = (&sql, &*self.inner.replan, named);
            write_statuses(&mut tx, statement, history, &[update]).await?;
            self.advance_fifo(&mut tx, target.endpoint_id).await?;
            tx.commit().await?;
            Ok::<(), EventError>(())
        };
        advance.await.map_err(JobError::retry)
    }

    /// Writes a status update through the batched writer (built on first use, inside the
    /// runtime).
    async fn record(&self, update: StatusUpdate) -> Result<(), JobError> {
        let writer = self
            .inner
            .status
            .get_or_try_init(|| async {
                let db = self.inner.system.clone();
                let (sql, history) = self.status_write();
                let sql = sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str();
                let replan = Arc::clone(&self.inner.replan);
                neo_batch::WriteBatcher::new(
                    self.inner.config.status_writes,
                    move |batch: Vec<StatusUpdate>| {
                        let (db, sql, replan) = (db.clone(), sql.clone(), Arc::clone(&replan));
                        async move {
                            // A transaction behind a transaction pooler (neo_db::Pooler).
                            let mut conn = db.statement_connection().await?;
                            let named = db.pooler().named_statements();
                            let statement = (&sql, &*replan, named);
                            write_statuses(&mut conn, statement, history, &batch).await?;
                            conn.finish().await
                        }
                    },
                )
            })
            .await
            .map_err(JobError::retry)?;
        writer.submit(update).await.map_err(JobError::retry)
    }
}

fn describe(answer: &Answer) -> String {
    match (&answer.error, answer.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) => format!("the endpoint answered {status}"),
        (None, None) => "no answer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, error: Option<&str>, sent: bool) -> Answer {
        Answer {
            status,
            body: None,
            retry_after: None,
            error: error.map(str::to_owned),
            took: Duration::ZERO,
            sent,
        }
    }

    #[test]
    fn only_signs_of_a_down_endpoint_count_against_its_breaker() {
        let up = |status| answer(Some(status), None, true).endpoint_up();
        assert_eq!(up(200), Some(true));
        assert_eq!(up(204), Some(true));
        // It answered on purpose: the receiver is up.
        assert_eq!(up(301), Some(true));
        assert_eq!(up(400), Some(true));
        assert_eq!(up(401), Some(true));
        assert_eq!(up(404), Some(true));
        // Overloaded or failing.
        assert_eq!(up(408), Some(false));
        assert_eq!(up(429), Some(false));
        assert_eq!(up(500), Some(false));
        assert_eq!(up(503), Some(false));
        // Refused, timed out, broken off.
        assert_eq!(
            answer(None, Some("could not connect"), true).endpoint_up(),
            Some(false)
        );
        assert_eq!(
            answer(Some(200), Some("the answer broke off"), true).endpoint_up(),
            Some(false)
        );
        // Never sent (refused address): says nothing about the endpoint.
        assert_eq!(
            answer(None, Some("refused address"), false).endpoint_up(),
            None
        );
    }
}
