//! The webhook pages: endpoints with their health, one endpoint's deliveries, one delivery
//! with its payload; replay, enable or disable, rotate the secret. In a tenant's console
//! every id is checked to be the tenant's before anything is read or done with it.

use crate::console::{Action, Authed, Inner};
use crate::html::{action, age, csrf_field, excerpt, page, percent, secure};
use crate::{Error, Result};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use neo_events::{Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, EndpointStats};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    }
}

fn parse_status(text: Option<&str>) -> Result<Option<DeliveryStatus>> {
    match text {
        None | Some("") => Ok(None),
        Some("pending") => Ok(Some(DeliveryStatus::Pending)),
        Some("delivered") => Ok(Some(DeliveryStatus::Delivered)),
        Some("dead") => Ok(Some(DeliveryStatus::Dead)),
        Some(other) => Err(Error::invalid(
            "status",
            format!("{other:?} is not pending, delivered or dead"),
        )),
    }
}

/// The endpoint, if the console may show it (another tenant's is not found).
async fn owned_endpoint(inner: &Inner, id: Uuid) -> Result<Endpoint> {
    let webhooks = inner.webhooks()?;
    let endpoint = inner.as_tenant(webhooks.endpoint(id)).await?;
    match inner.tenant {
        Some(tenant) if endpoint.tenant_id != Some(tenant) => Err(Error::not_found("endpoint", id)),
        _ => Ok(endpoint),
    }
}

/// The delivery, if the console may show it (another tenant's is not found).
async fn owned_delivery(inner: &Inner, id: i64) -> Result<Delivery> {
    let webhooks = inner.webhooks()?;
    let delivery = inner.as_tenant(webhooks.delivery(id)).await?;
    if let Some(tenant) = inner.tenant {
        if delivery.tenant_id != Some(tenant) {
            return Err(Error::not_found("delivery", id));
        }
        owned_endpoint(inner, delivery.endpoint_id)
            .await
            .map_err(|_| Error::not_found("delivery", id))?;
    }
    Ok(delivery)
}

fn millis(d: std::time::Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn parse_uuid(what: &'static str, text: &str) -> Result<Uuid> {
    text.parse()
        .map_err(|e: uuid::Error| Error::invalid(what, e.to_string()))
}

/// `GET /webhooks?after=`: a keyset page of endpoints with their health.
pub(crate) async fn endpoints(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    let webhooks = inner.webhooks()?;
    let after: Option<Uuid> = inner.decode(authed.query.get("after"))?;
    let size = inner.config.page_size;
    let mut list = inner
        .as_tenant(webhooks.endpoint_summaries(inner.tenant, after, size + 1))
        .await?;
    let next = if list.len() > size as usize {
        list.truncate(size as usize);
        list.last().map(|e| inner.encode(&e.id)).transpose()?
    } else {
        None
    };
    let ids: Vec<Uuid> = list.iter().map(|e| e.id).collect();
    let health: HashMap<Uuid, EndpointStats> = inner
        .as_tenant(webhooks.endpoints_stats(
            inner.tenant,
            &ids,
            inner.config.health_period,
            inner.config.health_window,
        ))
        .await?
        .into_iter()
        .map(|h| (h.endpoint_id, h))
        .collect();
    let breakers: HashMap<Uuid, String> = webhooks
        .breaker_states()
        .into_iter()
        .map(|(id, state)| (id, format!("{state:?}").to_lowercase()))
        .collect();
    let body = html! {
        p.muted { "Health covers each endpoint's deliveries of the last " (age(inner.config.health_period.as_secs_f64())) ", the latest " (inner.config.health_window) " of each status; the breaker is this instance's." }
        table id="endpoints" {
            tr { th { "endpoint" } th { "url" } th { "description" } th { "state" } th { "success" } th { "p50" } th { "p99" } th { "pending" } th { "dead" } th { "breaker" } }
            @for e in &list {
                @let h = health.get(&e.id);
                @let success = h.and_then(|h| h.success_rate);
                tr.endpoint data-endpoint=(e.id) {
                    td { a href=(inner.link(&format!("/webhooks/{}", e.id))) { code { (e.id) } } }
                    td { (e.url) }
                    td.description { (e.description) }
                    td { @if e.enabled { span.ok { "enabled" } } @else { span.bad { "disabled" } " " (e.disabled_reason.as_deref().unwrap_or("")) } }
                    td.n.bad[success.is_some_and(|r| r < 0.9)] { @match success { Some(r) => (percent(r)), None => "—" } }
                    td.n { @if let Some(d) = h.and_then(|h| h.latency_p50) { (millis(d)) } }
                    td.n { @if let Some(d) = h.and_then(|h| h.latency_p99) { (millis(d)) } }
                    td.n { (h.map_or(0, |h| h.pending)) }
                    td.n.bad[h.is_some_and(|h| h.dead > 0)] { (h.map_or(0, |h| h.dead)) }
                    td { (breakers.get(&e.id).map_or("closed", String::as_str)) }
                }
            }
        }
        @if list.is_empty() { p.muted { "No endpoints." } }
        @if let Some(next) = &next { a id="next" href=(format!("{}?after={next}", inner.link("/webhooks"))) { "Next page →" } }
    };
    Ok(page(
        &inner,
        &authed.principal,
        "webhooks",
        "Webhook endpoints",
        &body,
    ))
}

/// `GET /webhooks/{endpoint}?status=&before=`: the endpoint and a keyset page of its
/// deliveries, newest first.
pub(crate) async fn endpoint(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    authed: Authed,
) -> Result<Response> {
    let id = parse_uuid("endpoint id", &id)?;
    let endpoint = owned_endpoint(&inner, id).await?;
    let webhooks = inner.webhooks()?;
    let status = parse_status(authed.query.get("status"))?;
    let before: Option<i64> = inner.decode(authed.query.get("before"))?;
    let size = inner.config.page_size;
    let mut deliveries = inner
        .as_tenant(webhooks.delivery_page(inner.tenant, id, status, before, size + 1))
        .await?;
    let next = if deliveries.len() > size as usize {
        deliveries.truncate(size as usize);
        deliveries.last().map(|d| inner.encode(&d.id)).transpose()?
    } else {
        None
    };
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let mut attempts: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
    for a in inner
        .as_tenant(webhooks.delivery_attempts(inner.tenant, &ids))
        .await?
    {
        attempts.entry(a.delivery_id).or_default().push(a);
    }
    let principal = &authed.principal;
    let here = inner.link(&format!("/webhooks/{id}"));
    let max = inner.config.excerpt_chars;
    let body = html! {
        table id="endpoint" {
            tr { th { "url" } td { (endpoint.url) } }
            tr { th { "description" } td.description { (endpoint.description) } }
            tr { th { "tenant" } td { @if let Some(t) = endpoint.tenant_id { (t) } } }
            tr { th { "state" } td { @if endpoint.enabled { span.ok { "enabled" } } @else { span.bad { "disabled" } " " (endpoint.disabled_reason.as_deref().unwrap_or("")) } } }
            tr { th { "ordering" } td { @if endpoint.fifo { "FIFO" } @else { "unordered" } } }
            tr { th { "headers" } td { @for name in endpoint.headers.keys() { code { (name) } " " } } }
        }
        p {
            @if endpoint.enabled {
                form.inline method="post" action=(format!("{here}/enabled")) {
                    (csrf_field(&inner, principal))
                    input type="hidden" name="enabled" value="false";
                    input type="text" name="reason" placeholder="reason";
                    " " button id="disable" type="submit" { "Disable" }
                }
            } @else {
                (action(&inner, principal, &format!("/webhooks/{id}/enabled"), &[("enabled", "true".to_owned())], "Enable"))
            }
            " "
            (action(&inner, principal, &format!("/webhooks/{id}/rotate"), &[], "Rotate secret"))
        }
        form.inline id="recover" method="post" action=(format!("{here}/recover")) {
            (csrf_field(&inner, principal))
            label { "Send again every delivery that went dead since (UTC) "
                input type="datetime-local" name="since" required value=((chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M")); }
            " " button type="submit" { "Recover failed" }
        }
        h2 { "Deliveries" }
        p {
            "Show: "
            a href=(here) { "all" } " · "
            a href=(format!("{here}?status=pending")) { "pending" } " · "
            a href=(format!("{here}?status=delivered")) { "delivered" } " · "
            a href=(format!("{here}?status=dead")) { "dead" }
        }
        table id="deliveries" {
            tr { th { "delivery" } th { "event type" } th { "status" } th { "attempts" } th { "last answer" } th { "duration" } th { "last error" } th { "response" } th { "created" } th {} }
            @for d in &deliveries {
                tr.delivery data-delivery=(d.id) data-status=(status_name(d.status)) {
                    td { a href=(inner.link(&format!("/deliveries/{}", d.id))) { (d.id) } }
                    td { (d.event_type) }
                    td.bad[d.status == DeliveryStatus::Dead] { (status_name(d.status)) }
                    td.n { (d.attempts) }
                    td.n { @if let Some(s) = d.response_status { (s) } }
                    td.n { @if let Some(ms) = d.duration_ms { (ms) " ms" } }
                    td { (excerpt(d.last_error.as_deref().unwrap_or(""), max)) }
                    td { code { (excerpt(d.response_body.as_deref().unwrap_or(""), max)) } }
                    td { (d.created_at.format("%Y-%m-%d %H:%M:%S")) }
                    td { @if d.status == DeliveryStatus::Dead {
                        (action(&inner, principal, &format!("/deliveries/{}/replay", d.id), &[], "Replay"))
                    } }
                }
                @for a in attempts.get(&d.id).map_or(&[][..], Vec::as_slice) {
                    (attempt_row(a, max))
                }
            }
        }
        @if deliveries.is_empty() { p.muted { "No deliveries." } }
        @if let Some(next) = &next {
            a id="next" href=(format!("{here}?status={}&before={next}", status.map_or("", status_name))) { "Next page →" }
        }
    };
    Ok(page(&inner, principal, "webhooks", "Endpoint", &body))
}

/// One attempt as a row under its delivery in the endpoint's table.
fn attempt_row(a: &DeliveryAttempt, max: usize) -> maud::Markup {
    html! {
        tr.attempt data-delivery=(a.delivery_id) data-attempt=(a.attempt) {
            td.muted { "↳ attempt " (a.attempt) }
            td {}
            td.bad[a.outcome == "dead"] { (a.outcome) }
            td {}
            td.n { @if let Some(s) = a.response_status { (s) } }
            td.n { @if let Some(ms) = a.duration_ms { (ms) " ms" } }
            td { (excerpt(a.error.as_deref().unwrap_or(""), max)) }
            td { code { (excerpt(a.response_excerpt.as_deref().unwrap_or(""), max)) } }
            td { (a.created_at.format("%Y-%m-%d %H:%M:%S")) }
            td {}
        }
    }
}

/// `GET /deliveries/{delivery}`: one delivery with its payload.
pub(crate) async fn delivery(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    authed: Authed,
) -> Result<Response> {
    let d = owned_delivery(&inner, id).await?;
    let webhooks = inner.webhooks()?;
    let body_text = inner
        .as_tenant(webhooks.message_payload(inner.tenant, d.message_id))
        .await?
        .unwrap_or_default();
    let attempts = inner
        .as_tenant(webhooks.delivery_attempts(inner.tenant, &[id]))
        .await?;
    let max = inner.config.excerpt_chars;
    let principal = &authed.principal;
    let body = html! {
        table id="delivery" {
            tr { th { "endpoint" } td { a href=(inner.link(&format!("/webhooks/{}", d.endpoint_id))) { code { (d.endpoint_id) } } } }
            tr { th { "message" } td { code { (d.message_id) } } }
            tr { th { "event type" } td { (d.event_type) } }
            tr { th { "status" } td { (status_name(d.status)) } }
            tr { th { "attempts" } td { (d.attempts) } }
            tr { th { "last answer" } td { @if let Some(s) = d.response_status { (s) } } }
            tr { th { "duration" } td { @if let Some(ms) = d.duration_ms { (ms) " ms" } } }
            tr { th { "last error" } td { (excerpt(d.last_error.as_deref().unwrap_or(""), max)) } }
            tr { th { "next attempt" } td { @if let Some(at) = d.next_attempt_at { (at) } } }
            tr { th { "created" } td { (d.created_at) } }
            tr { th { "delivered" } td { @if let Some(at) = d.delivered_at { (at) } } }
        }
        @if d.status == DeliveryStatus::Dead {
            p { (action(&inner, principal, &format!("/deliveries/{id}/replay"), &[], "Replay")) }
        }
        h2 { "Attempts" }
        table id="attempts" {
            tr { th { "attempt" } th {} th { "outcome" } th {} th { "answer" } th { "duration" } th { "error" } th { "response" } th { "at" } th {} }
            @for a in &attempts { (attempt_row(a, max)) }
        }
        @if attempts.is_empty() { p.muted { "No attempt recorded." } }
        h2 { "Last response body" }
        pre id="response" { (excerpt(d.response_body.as_deref().unwrap_or(""), max)) }
        h2 { "Payload" }
        pre id="payload" { (excerpt(&body_text, max)) }
    };
    Ok(page(&inner, principal, "webhooks", "Delivery", &body))
}

/// `POST /deliveries/{delivery}/replay`: sends a dead delivery again.
pub(crate) async fn replay(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    act: Action,
) -> Result<Response> {
    let d = owned_delivery(&inner, id).await?;
    let replayed = inner.as_tenant(inner.webhooks()?.replay(id)).await?;
    tracing::info!(who = %act.principal.subject, delivery = id, replayed, "console replayed a delivery");
    Ok(Redirect::to(&inner.link(&format!("/webhooks/{}", d.endpoint_id))).into_response())
}

/// `POST /webhooks/{endpoint}/enabled` with `enabled=true|false` and an optional `reason`.
pub(crate) async fn set_enabled(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    act: Action,
) -> Result<Response> {
    let id = parse_uuid("endpoint id", &id)?;
    owned_endpoint(&inner, id).await?;
    let enabled = match act.form.get("enabled") {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(Error::invalid("enabled", "must be true or false")),
    };
    let reason = act
        .form
        .get("reason")
        .filter(|r| !r.is_empty())
        .unwrap_or("disabled in the console");
    inner
        .as_tenant(inner.webhooks()?.set_enabled(id, enabled, Some(reason)))
        .await?;
    tracing::info!(who = %act.principal.subject, endpoint = %id, enabled, "console changed an endpoint");
    Ok(Redirect::to(&inner.link(&format!("/webhooks/{id}"))).into_response())
}

/// `POST /webhooks/{endpoint}/rotate`: a new secret, shown in this answer only (never stored
/// in a page that can be loaded again; `Cache-Control: no-store`).
pub(crate) async fn rotate(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    act: Action,
) -> Result<Response> {
    let id = parse_uuid("endpoint id", &id)?;
    owned_endpoint(&inner, id).await?;
    let secret = inner.as_tenant(inner.webhooks()?.rotate_secret(id)).await?;
    tracing::info!(who = %act.principal.subject, endpoint = %id, "console rotated an endpoint secret");
    let back = inner.link(&format!("/webhooks/{id}"));
    Ok(secure(html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "New secret · " (inner.config.title) } }
            body {
                h1 { "New signing secret" }
                p { "Copy it now: it is not shown again. The old secret keeps signing for the overlap period." }
                p.secret id="secret" { (secret.expose()) }
                p { a href=(back) { "Back to the endpoint" } }
            }
        }
    }))
}

/// `POST /webhooks/{endpoint}/recover` with `since` (`YYYY-MM-DDTHH:MM[:SS]`, UTC, or RFC
/// 3339): sends again every delivery of the endpoint that went dead since then.
pub(crate) async fn recover(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    act: Action,
) -> Result<Response> {
    let id = parse_uuid("endpoint id", &id)?;
    owned_endpoint(&inner, id).await?;
    let since = parse_since(act.form.get("since").unwrap_or(""))?;
    let replayed = inner
        .as_tenant(inner.webhooks()?.replay_since(id, since))
        .await?;
    tracing::info!(who = %act.principal.subject, endpoint = %id, %since, replayed, "console recovered failed deliveries");
    Ok(Redirect::to(&inner.link(&format!("/webhooks/{id}"))).into_response())
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|at| at.and_utc())
        .ok_or_else(|| {
            Error::invalid(
                "since",
                format!("{text:?} is not a time such as 2026-12-05T14:00 (UTC)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_reads_the_browsers_local_time_as_utc_and_rfc_3339() {
        assert_eq!(
            parse_since("2026-12-05T14:00").unwrap().to_rfc3339(),
            "2026-12-05T14:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-12-05T14:00:30").unwrap().to_rfc3339(),
            "2026-12-05T14:00:30+00:00"
        );
        assert_eq!(
            parse_since("2026-12-05T15:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-05T14:00:00+00:00"
        );
        assert!(
            parse_since("yesterday")
                .unwrap_err()
                .to_string()
                .contains("since")
        );
    }
}
