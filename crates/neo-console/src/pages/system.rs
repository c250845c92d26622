//! The outbox, cache and database pages.

use crate::console::{Authed, Inner};
use crate::html::{age, page, percent};
use crate::{Error, Result};
use axum::extract::State;
use axum::response::Response;
use maud::html;
use sqlx::Row;
use std::sync::Arc;

/// `GET /outbox`: lag, pending and last dispatch per outbox.
pub(crate) async fn outbox(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    inner.operator_only()?;
    let mut rows = Vec::new();
    if let Some(r) = &inner.readings {
        for schema in &inner.outboxes {
            rows.push((
                r.outbox(schema).await?,
                r.outbox_last_dispatch(schema).await?,
            ));
        }
    }
    let cap = inner.config.count_cap;
    let body = html! {
        table id="outboxes" {
            tr { th { "outbox" } th { "pending" } th { "lag" } th { "last dispatch" } }
            @for (r, last) in &rows {
                tr {
                    td { (r.outbox) }
                    td.n { (r.pending) @if r.pending >= cap { "+" } }
                    td.n class=[(r.lag_seconds > 60.0).then_some("bad")] { (age(r.lag_seconds)) }
                    td.n { @match last { Some(s) => { (age(*s)) " ago" }, None => { "never" } } }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No outbox given." } }
    };
    Ok(page(&inner, &authed.principal, "outbox", "Outbox", &body))
}

/// `GET /cache`: each cache's counters since it was built.
pub(crate) async fn cache(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    inner.operator_only()?;
    let rows: Vec<_> = inner.caches.iter().map(|probe| probe()).collect();
    let body = html! {
        table id="caches" {
            tr { th { "cache" } th { "hit ratio" } th { "L1 entries" } th { "lookups" } th { "L2 hits" } th { "evictions" } th { "loads" } th { "bytes stored" } }
            @for c in &rows {
                tr {
                    td { (c.name) }
                    td.n { @if c.lookups == 0 { "—" } @else { (percent(c.hits as f64 / c.lookups as f64)) } }
                    td.n { (c.l1_entries) } td.n { (c.lookups) } td.n { (c.l2_hits) }
                    td.n { (c.evictions) } td.n { (c.loads) } td.n { (c.bytes_stored) }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No cache given." } }
    };
    Ok(page(&inner, &authed.principal, "cache", "Cache", &body))
}

/// `GET /database`: pool use and the sessions waiting on locks now.
pub(crate) async fn database(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    inner.operator_only()?;
    let db = inner
        .db
        .as_ref()
        .ok_or_else(|| Error::not_found("page", "database"))?;
    let stats = db.stats();
    let locks = match &inner.readings {
        Some(r) => Some(r.locks().await?),
        None => None,
    };
    let mut conn = db.statement_connection().await?;
    let waits = sqlx::query(
        "SELECT pid, coalesce(usename::text, '') AS who, \
                extract(epoch FROM clock_timestamp() - state_change)::float8 AS waited, \
                coalesce(wait_event, '') AS event, left(query, 300) AS query, \
                cardinality(pg_blocking_pids(pid)) AS blockers \
         FROM pg_catalog.pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
         ORDER BY state_change LIMIT $1",
    )
    .persistent(false)
    .bind(i64::from(inner.config.max_lock_waits))
    .fetch_all(&mut *conn)
    .await?;
    conn.finish().await?;
    let in_use = stats.size.saturating_sub(stats.idle);
    let body = html! {
        h2 { "Pool" }
        table id="pool" {
            tr { th { "in use" } th { "idle" } th { "open" } th { "max" } th { "acquired" } th { "acquire timeouts" } th { "held too long" } }
            tr {
                td.n class=[(in_use >= stats.max_size).then_some("bad")] { (in_use) }
                td.n { (stats.idle) } td.n { (stats.size) } td.n { (stats.max_size) }
                td.n { (stats.acquired) } td.n class=[(stats.acquire_timeouts > 0).then_some("bad")] { (stats.acquire_timeouts) }
                td.n { (stats.held_too_long) }
            }
        }
        h2 { "Lock waits" }
        @if let Some(l) = &locks { p { (l.waiting) " session(s) waiting; longest " (age(l.longest_seconds)) "." } }
        table id="lock-waits" {
            tr { th { "pid" } th { "role" } th { "waiting" } th { "on" } th { "blocked by" } th { "statement" } }
            @for w in &waits {
                tr {
                    td.n { (w.try_get::<i32, _>("pid").unwrap_or_default()) }
                    td { (w.try_get::<String, _>("who").unwrap_or_default()) }
                    td.n { (age(w.try_get::<f64, _>("waited").unwrap_or_default().max(0.0))) }
                    td { (w.try_get::<String, _>("event").unwrap_or_default()) }
                    td.n { (w.try_get::<i32, _>("blockers").unwrap_or_default()) }
                    td { code { (w.try_get::<String, _>("query").unwrap_or_default()) } }
                }
            }
        }
    };
    Ok(page(
        &inner,
        &authed.principal,
        "database",
        "Database",
        &body,
    ))
}
