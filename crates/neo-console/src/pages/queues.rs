//! The queues page: capped counts per state and queue, the oldest pending job, and one
//! queue's dead letters a keyset page at a time; retry and discard one or many.

use crate::console::{Action, Authed, Inner};
use crate::html::{action, age, csrf_field, excerpt, page};
use crate::{Error, Result};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use neo_core::JobId;
use std::sync::Arc;

/// `GET /queues?queue=&after=`.
pub(crate) async fn list(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    inner.operator_only()?;
    let mut readings = Vec::new();
    if let Some(r) = &inner.readings {
        for q in &inner.queues {
            readings.push(r.queue(&q.config().schema).await?);
        }
    }
    let selected = match authed.query.get("queue") {
        Some(name) => Some(inner.queue(name)?),
        None => inner.queues.first(),
    };
    let after: Option<(DateTime<Utc>, JobId)> = inner.decode(authed.query.get("after"))?;
    let page_size = inner.config.page_size;
    let (dead, next) = match selected {
        Some(q) => {
            let mut dead = q.dead_letters_after(after, page_size + 1).await?;
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
    let body = html! {
        @if inner.readings.is_none() { p.muted { "No database given: counts are not shown." } }
        table id="queue-counts" {
            tr { th { "queue" } th { "available" } th { "running" } th { "dead" } th { "oldest pending" } }
            @for r in &readings {
                tr {
                    td { a href=(format!("{}?queue={}", inner.link("/queues"), r.queue)) { (r.queue) } }
                    td.n { (r.available) @if r.available >= cap { "+" } }
                    td.n { (r.running) @if r.running >= cap { "+" } }
                    td.n class=[(r.dead > 0).then_some("bad")] { (r.dead) @if r.dead >= cap { "+" } }
                    td.n { (age(r.oldest_pending_seconds)) }
                }
            }
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

/// `POST /queues/{queue}/retry`: the selected dead letters back in the queue.
pub(crate) async fn retry(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    inner.operator_only()?;
    let q = inner.queue(&queue)?;
    let ids = job_ids(&act.form)?;
    let done = q.requeue(&ids).await?;
    tracing::info!(who = %act.principal.subject, queue, jobs = done.len(), "console retried dead letters");
    Ok(Redirect::to(&format!("{}?queue={queue}", inner.link("/queues"))).into_response())
}

/// `POST /queues/{queue}/discard`: the selected dead letters deleted.
pub(crate) async fn discard(
    State(inner): State<Arc<Inner>>,
    Path(queue): Path<String>,
    act: Action,
) -> Result<Response> {
    inner.operator_only()?;
    let q = inner.queue(&queue)?;
    let ids = job_ids(&act.form)?;
    let done = q.discard_dead(&ids).await?;
    tracing::info!(who = %act.principal.subject, queue, jobs = done.len(), "console discarded dead letters");
    Ok(Redirect::to(&format!("{}?queue={queue}", inner.link("/queues"))).into_response())
}
