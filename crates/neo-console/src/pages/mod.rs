//! The pages: the overview and the login form here, then one module per area.

pub(crate) mod queues;
pub(crate) mod system;
pub(crate) mod webhooks;

use crate::Result;
use crate::console::{Authed, Inner, Params};
use crate::html::{page, secure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use neo_core::ExposeSecret;
use std::sync::Arc;

/// `GET /`: where each area is.
pub(crate) async fn overview(State(inner): State<Arc<Inner>>, authed: Authed) -> Result<Response> {
    if inner.tenant.is_some() {
        return Ok(Redirect::to(&inner.link("/webhooks")).into_response());
    }
    let body = html! {
        ul {
            li { a href=(inner.link("/queues")) { "Queues" } " — " (inner.queues.len()) " queue(s), throughput, dead letters, retry and discard, pause and resume" }
            li { a href=(inner.link("/webhooks")) { "Webhooks" } " — endpoints, health, deliveries and their attempts, replay, recover" }
            li { a href=(inner.link("/outbox")) { "Outbox" } " — " (inner.outboxes.len()) " outbox(es): lag, pending, last dispatch" }
            li { a href=(inner.link("/cache")) { "Cache" } " — " (inner.caches.len()) " cache(s): hit ratio, sizes, evictions" }
            li { a href=(inner.link("/database")) { "Database" } " — pool use, top statements beside their baseline, lock waits" }
        }
    };
    Ok(page(&inner, &authed.principal, "", "Overview", &body))
}

/// `GET /login`: the token form (for authorizers that take one).
pub(crate) async fn login_form(State(inner): State<Arc<Inner>>) -> Response {
    secure(html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in · " (inner.config.title) } }
            body {
                h1 { (inner.config.title) }
                form method="post" action=(inner.link("/login")) {
                    label { "Token " input type="password" name="token" autocomplete="off"; }
                    " " button type="submit" { "Sign in" }
                }
            }
        }
    })
}

/// `POST /login`: sets the authorizer's cookie for a good token; 401 otherwise.
pub(crate) async fn login(State(inner): State<Arc<Inner>>, body: Bytes) -> Result<Response> {
    let form = Params::parse(&body);
    let token = form.get("token").unwrap_or("");
    let Some(value) = inner.authorizer.login(token) else {
        return Err(crate::Error::Unauthorized);
    };
    let path = inner.home();
    let cookie = format!(
        "{}={}; Path={path}; HttpOnly; SameSite=Strict",
        inner.config.cookie_name,
        value.expose_secret()
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|_| {
        crate::Error::invalid(
            "login",
            "the authorizer's cookie value is not a header value",
        )
    })?;
    let mut response = (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(&inner.home())
                .map_err(|_| crate::Error::invalid("base_path", "not a header value"))?,
        )],
    )
        .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}
