//! The queues page: capped counts per state and queue, the oldest pending job, whether each
//! queue is paused (pause and resume), the selected queue's throughput chart, and one queue's dead letters a
//! keyset page at a time; retry and discard one or many.
//!
//! In a tenant's console the page shows the tenant's own jobs only (its counts and its dead
//! letters, by the jobs' tenant key), retry and discard act only on them, and pausing (an act
//! over the whole queue) is not offered: its POSTs answer 404.

use crate::console::{Action, Authed, Inner};
use crate::html::{action, age, csrf_field, excerpt, page};
use crate::{Error, Result};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use neo_core::JobId;
use neo_queue::{PauseStatus, Queue};
use std::sync::Arc;

/// One queue's row in the counts table.
struct Counts {
    queue: String,
    available: i64,
    running: i64,
    dead: i64,
    /// Of the console's tenant's jobs in a tenant's console.
    oldest_pending_seconds: f64,
    /// `None` in a tenant's console (pausing is the operator's).
    paused: Option<Option<PauseStatus>>,
}

/// The queue as the console acts on it: bound to the console's tenant in a tenant's console
/// (so a tenant-isolated queue reads that tenant's table or rows).
fn acting(inner: &Inner, q: &Queue) -> Queue {
    match inner.tenant {
        Some(tenant) => q.for_tenant(tenant),
        None => q.clone(),
    }
}

/// The tenant key the console's reads and actions are limited to (the jobs' `tenant`).
fn tenant_key(inner: &Inner) -> Option<String> {
    inner.tenant.map(|t| t.to_string())
}

async fn counts(inner: &Inner) -> Result<Vec<Counts>> {
    let mut rows = Vec::new();
    let key = tenant_key(inner);
    for q in &inner.queues {
        let depth = acting(inner, q)
            .capped_depth_of(key.as_deref(), inner.config.count_cap)
            .await?;
        rows.push(Counts {
            queue: q.config().schema.clone(),
            available: depth.available,
            running: depth.running,
            dead: depth.dead,
            oldest_pending_seconds: depth.oldest_due.map_or(0.0, |d| d.as_secs_f64()),
            paused: match inner.tenant {
                None => Some(q.pause_status().await?),
                Some(_) => None,
            },
        });
    }
    Ok(rows)
}

/// `GET /queues?queue=&after=`.
pub(crate) async fn list(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    let readings = counts(&inner).await?;
    let selected = match authed.query.get("queue") {
        Some(name) => Some(inner.queue(name)?),
        None => inner.queues.first(),
    };
    let after: Option<(DateTime<Utc>, JobId)> = inner.decode(authed.query.get("after"))?;
    let page_size = inner.config.page_size;
    let key = tenant_key(&inner);
    let (dead, next) = match selected {
        Some(q) => {
            let mut dead = acting(&inner, q)
                .dead_letters_of(key.as_deref(), after, page_size + 1)
                .await?;
            let next = if dead.len() > page_size as usize {
                dead.truncate(page_size as usize);
                dead.last()
                    .and_then(|j| j.dead_at.map(|at| (at, j.id)))
                    .map(|p| inner.encode(&p))
                    .transpose()?
            } else {
                None
            };
            (dead, next)
        }
        None => (Vec::new(), None),
    };
    let principal = &authed.principal;
    let cap = inner.config.count_cap;
    let operator = inner.tenant.is_none();
    let chart = match (&inner.throughput, selected) {
        (Some(t), Some(q)) => Some(crate::chart::throughput(
            &q.config().schema,
            &t.rates(&q.config().schema),
            inner.config.throughput_window,
        )),
        _ => None,
    };
    let body = html! {
        table id="queue-counts" {
            tr {
                th { "queue" } th { "available" } th { "running" } th { "dead" } th { "oldest pending" }
                @if operator { th { "state" } }
            }
            @for r in &readings {
                tr.queue data-queue=(r.queue) data-paused=[r.paused.as_ref().map(|p| p.is_some())] {
                    td { a href=(format!("{}?queue={}", inner.link("/queues"), r.queue)) { (r.queue) } }
                    td.n { (r.available) @if r.available >= cap { "+" } }
                    td.n { (r.running) @if r.running >= cap { "+" } }
                    td.n.bad[r.dead > 0] { (r.dead) @if r.dead >= cap { "+" } }
                    td.n { (age(r.oldest_pending_seconds)) }
                    @if let Some(paused) = &r.paused {
                        td {
                            @match paused {
                                Some(p) => {
                                    span.bad.paused { "paused" } " since " (p.paused_at.format("%Y-%m-%d %H:%M:%S"))
                                    @if let Some(by) = &p.paused_by { " by " (by) }
                                    " " (action(&inner, principal, &format!("/queues/{}/resume", r.queue), &[], "Resume"))
                                }
                                None => {
                                    span.ok { "running" } " "
                                    (action(&inner, principal, &format!("/queues/{}/pause", r.queue), &[], "Pause"))
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let (Some(chart), Some(q)) = (chart, selected) {
            h2 { "Throughput of " (q.config().schema) }
            (chart)
            p.muted { "From PostgreSQL's row counts of the jobs table (inserted: enqueued; deleted: finished, discarded or pruned), sampled by this console every " (age(inner.config.throughput_sample.as_secs_f64())) "." }
        }
        @if let Some(q) = selected {
            @let name = &q.config().schema;
            h2 { "Dead letters of " (name) }
            @if dead.is_empty() { p.muted id="no-dead" { "No dead letters." } } @else {
                form id="dead-letters" method="post" action=(inner.link(&format!("/queues/{name}/retry"))) {
                    (csrf_field(&inner, principal))
                    table {
                        tr { th {} th { "job" } th { "kind" } th { "attempts" } th { "dead at" } th { "tenant" } th { "last error" } th { "payload" } }
                        @for j in &dead {
                            tr.dead-job data-job=(j.id) {
                                td { input type="checkbox" name="ids" value=(j.id); }
                                td { code { (j.id) } }
                                td { (j.kind) }
                                td.n { (j.attempts) " / " (j.max_attempts) }
                                td { @if let Some(at) = j.dead_at { (at.format("%Y-%m-%d %H:%M:%S")) } }
                                td { (j.tenant.as_deref().unwrap_or("")) }
                                td.bad { (excerpt(j.last_error.as_deref().unwrap_or(""), inner.config.excerpt_chars)) }
                                td { code { (excerpt(&j.payload.to_string(), inner.config.excerpt_chars)) } }
                            }
                        }
                    }
                    button type="submit" name="do" value="retry" { "Retry selected" }
                    " "
                    button type="submit" formaction=(inner.link(&format!("/queues/{name}/discard"))) { "Discard selected" }
                }
                p { @for j in dead.iter().take(1) {
                    "First on this page: " (action(&inner, principal, &format!("/queues/{name}/retry"), &[("ids", j.id.to_string())], "Retry it"))
                } }
                @if let Some(next) = &next {
                    a id="next" href=(format!("{}?queue={}&after={}", inner.link("/queues"), name, next)) { "Next page →" }
                }
            }
        }
    };
    Ok(page(&inner, principal, "queues", "Queues", &body))
}

fn job_ids(form: &crate::console::Params) -> Result<Vec<JobId>> {
    let ids = form
        .all("ids")
        .map(|id| JobId::parse(id).map_err(|e| Error::invalid("job id", e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        return Err(Error::invalid("selection", "no job was selected"));
    }
    Ok(ids)
}

/// In a tenant's console, an id that was not the tenant's dead letter is not found (the
/// tenant's own were acted on).
fn all_done(inner: &Inner, asked: &[JobId], done: &[JobId]) -> Result<()> {
    match asked.iter().find(|id| !done.contains(id)) {
        Some(id) if inner.tenant.is_some() => Err(Error::not_found("dead letter", id)),
        _ => Ok(()),
    }
}

fn back(inner: &Inner, queue: &str) -> Response {
    Redirect::to(&format!("{}?queue={queue}", inner.link("/queues"))).into_response()
}

/// `POST /queues/{queue}/retry`: the selected dead letters back in the queue.
pub(crate) async fn retry(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    let q = acting(&inner, inner.queue(&queue)?);
    let ids = job_ids(&act.form)?;
    let done = q.requeue_of(tenant_key(&inner).as_deref(), &ids).await?;
    tracing::info!(who = %act.principal.subject, queue, jobs = done.len(), "console retried dead letters");
    all_done(&inner, &ids, &done)?;
    Ok(back(&inner, &queue))
}

/// `POST /queues/{queue}/discard`: the selected dead letters deleted.
pub(crate) async fn discard(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    let q = acting(&inner, inner.queue(&queue)?);
    let ids = job_ids(&act.form)?;
    let done = q
        .discard_dead_of(tenant_key(&inner).as_deref(), &ids)
        .await?;
    tracing::info!(who = %act.principal.subject, queue, jobs = done.len(), "console discarded dead letters");
    all_done(&inner, &ids, &done)?;
    Ok(back(&inner, &queue))
}

/// `POST /queues/{queue}/pause`: no job of the queue starts until it is resumed (operator
/// console only).
pub(crate) async fn pause(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    inner.operator_only()?;
    let q = inner.queue(&queue)?;
    let by = format!("{} (console)", act.principal.subject);
    let paused = q.pause(Some(&by)).await?;
    tracing::info!(who = %act.principal.subject, queue, paused, "console paused a queue");
    Ok(back(&inner, &queue))
}

/// `POST /queues/{queue}/resume`: workers claim the queue's jobs again (operator console
/// only).
pub(crate) async fn resume(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    inner.operator_only()?;
    let q = inner.queue(&queue)?;
    let resumed = q.resume().await?;
    tracing::info!(who = %act.principal.subject, queue, resumed, "console resumed a queue");
    Ok(back(&inner, &queue))
}
