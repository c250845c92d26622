//! The outbox, cache and database pages.

use crate::console::{Authed, Inner};
use crate::html::{age, excerpt, page, percent};
use crate::{Error, Result};
use axum::extract::State;
use axum::response::Response;
use maud::html;
use neo_db::diagnostics::{StatementBaseline, StatementStats, lock_waits, top_statements};
use std::sync::Arc;
use std::time::Duration;

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
                    td.n.bad[r.lag_seconds > 60.0] { (age(r.lag_seconds)) }
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

/// The top statements, with their baseline when the console has one; `Err` with why there
/// are none when `pg_stat_statements` is not usable.
enum Statements {
    Compared(Vec<StatementBaseline>),
    Plain(Vec<StatementStats>),
    Unavailable(String),
}

async fn statements(inner: &Inner, db: &neo_db::Db) -> Result<Statements> {
    let limit = inner.config.top_statements;
    match &inner.baselines {
        Some((baselines, name)) => match baselines.top(name, limit).await {
            Ok(top) => Ok(Statements::Compared(top)),
            Err(neo_db::Error::Config(why)) => Ok(Statements::Unavailable(why)),
            Err(e) => Err(e.into()),
        },
        None => Ok(match top_statements(db, limit).await? {
            Some(top) => Statements::Plain(top),
            None => Statements::Unavailable(
                "pg_stat_statements is not usable in this database (shared_preload_libraries and CREATE EXTENSION)".into(),
            ),
        }),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `GET /database`: pool use, the top statements (beside their baseline) and the sessions
/// waiting on locks now with who blocks them.
pub(crate) async fn database(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    inner.operator_only()?;
    let db = inner
        .db
        .as_ref()
        .ok_or_else(|| Error::not_found("page", "database"))?;
    let stats = db.stats();
    let top = statements(&inner, db).await?;
    let mut waits = lock_waits(db).await?;
    let waiting = {
        let mut pids: Vec<i32> = waits.iter().map(|w| w.waiting_pid).collect();
        pids.dedup();
        pids.len()
    };
    waits.truncate(inner.config.max_lock_waits as usize);
    let max = inner.config.excerpt_chars;
    let in_use = stats.size.saturating_sub(stats.idle);
    let body = html! {
        h2 { "Pool" }
        table id="pool" {
            tr { th { "in use" } th { "idle" } th { "open" } th { "max" } th { "acquired" } th { "acquire timeouts" } th { "held too long" } }
            tr {
                td.n.bad[in_use >= stats.max_size] { (in_use) }
                td.n { (stats.idle) } td.n { (stats.size) } td.n { (stats.max_size) }
                td.n { (stats.acquired) } td.n.bad[stats.acquire_timeouts > 0] { (stats.acquire_timeouts) }
                td.n { (stats.held_too_long) }
            }
        }
        h2 { "Top statements" }
        @match &top {
            Statements::Compared(rows) => {
                @if let Some((_, name)) = &inner.baselines { p.muted { "By total time, beside the baseline " code { (name) } ": the mean of the calls since it over its mean." } }
                table id="statements" {
                    tr { th { "statement" } th { "calls" } th { "total" } th { "mean" } th { "rows/call" } th { "baseline mean" } th { "calls since" } th { "mean since" } th { "ratio" } }
                    @for t in rows {
                        @let b = t.baseline.as_ref();
                        tr.statement data-queryid=(t.queryid) data-regressed=(b.is_some_and(|b| b.regressed)) {
                            td { code { (excerpt(&t.query, max)) } }
                            td.n { (t.calls) } td.n { (ms(t.total)) } td.n { (ms(t.mean)) }
                            td.n { (format!("{:.1}", t.rows_per_call)) }
                            @match b {
                                Some(b) => {
                                    td.n { (ms(b.mean)) } td.n { (b.calls_since) }
                                    td.n { @if let Some(m) = b.mean_since { (ms(m)) } }
                                    td.n.bad[b.regressed] { @if let Some(r) = b.ratio { (format!("{r:.2}×")) } }
                                }
                                None => { td.muted colspan="4" { "not in the baseline" } }
                            }
                        }
                    }
                }
            }
            Statements::Plain(rows) => {
                p.muted { "By mean time (no baseline given to the console)." }
                table id="statements" {
                    tr { th { "statement" } th { "calls" } th { "total" } th { "mean" } th { "rows" } }
                    @for t in rows {
                        tr.statement {
                            td { code { (excerpt(&t.query, max)) } }
                            td.n { (t.calls) } td.n { (ms(t.total)) } td.n { (ms(t.mean)) } td.n { (t.rows) }
                        }
                    }
                }
            }
            Statements::Unavailable(why) => { p.muted id="no-statements" { (why) } }
        }
        h2 { "Lock waits" }
        p { (waiting) " session(s) waiting." }
        table id="lock-waits" {
            tr { th { "pid" } th { "waiting" } th { "lock" } th { "on" } th { "statement" } th { "blocked by" } th { "its state" } th { "its statement" } }
            @for w in &waits {
                tr.lock-wait data-pid=(w.waiting_pid) {
                    td.n { (w.waiting_pid) }
                    td.n { (age(w.waiting_for.as_secs_f64())) }
                    td { (w.lock_type) " " (w.mode) }
                    td { (w.relation.as_deref().unwrap_or("")) }
                    td { code { (excerpt(&w.waiting_query, max)) } }
                    td.n { (w.blocking_pid) }
                    td { (w.blocking_state.as_deref().unwrap_or("")) }
                    td { code { (excerpt(&w.blocking_query, max)) } }
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
