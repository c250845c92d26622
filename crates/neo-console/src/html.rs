//! The page frame, forms and small formatting helpers. maud escapes every value spliced into
//! a template, so nothing here builds HTML from strings.

use crate::auth::Principal;
use crate::console::Inner;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}\
header a{color:#cfe0ff;text-decoration:none}header a.here{color:#fff;font-weight:600}\
header .who{margin-left:auto;color:#9aa6bd}main{padding:1em 1.2em}\
table{border-collapse:collapse;background:#fff;margin:.6em 0 1.2em;min-width:40%}\
th,td{border:1px solid #dde1e8;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34}.muted{color:#6b7385}\
pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #dde1e8;padding:.6em;max-width:80em}\
form.inline{display:inline}button{cursor:pointer}.secret{font:16px monospace;background:#fff8d6;padding:.6em;border:1px solid #e0c200}";

/// A response carrying `page` with the console's security headers: no caching, no framing,
/// no scripts (`Content-Security-Policy` allows only the inline style sheet and same-origin
/// forms), no MIME sniffing, no referrer.
pub(crate) fn secure(page: Markup) -> Response {
    let mut response = Html(page.into_string()).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

/// The navigation: every page in the operator console, the webhooks and queues in a tenant's.
fn nav(inner: &Inner, here: &str) -> Markup {
    let pages: &[(&str, &str)] = if inner.tenant.is_some() {
        &[("webhooks", "Webhooks"), ("queues", "Queues")]
    } else {
        &[
            ("queues", "Queues"),
            ("webhooks", "Webhooks"),
            ("outbox", "Outbox"),
            ("cache", "Cache"),
            ("database", "Database"),
        ]
    };
    html! {
        @for (path, label) in pages {
            a href=(inner.link(&format!("/{path}"))) class=[(*path == here).then_some("here")] { (label) }
        }
    }
}

/// A whole page.
pub(crate) fn page(
    inner: &Inner,
    principal: &Principal,
    here: &str,
    title: &str,
    body: &Markup,
) -> Response {
    secure(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (inner.config.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { (inner.config.title) }
                    @if let Some(tenant) = inner.tenant { span.muted { "tenant " (tenant) } }
                    (nav(inner, here))
                    span.who { (principal.subject) }
                }
                main { h1 { (title) } (body) }
            }
        }
    })
}

/// A POST form with the CSRF token, `hidden` fields and one button.
pub(crate) fn action(
    inner: &Inner,
    principal: &Principal,
    path: &str,
    hidden: &[(&str, String)],
    label: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(inner.link(path)) {
            input type="hidden" name="csrf" value=(inner.csrf.token(principal));
            @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
            button type="submit" { (label) }
        }
    }
}

/// The CSRF field alone, for forms with their own inputs.
pub(crate) fn csrf_field(inner: &Inner, principal: &Principal) -> Markup {
    html! { input type="hidden" name="csrf" value=(inner.csrf.token(principal)); }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Seconds as `12.3 s`, `4 min`, `2.1 h`.
pub(crate) fn age(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7_200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3_600.0)
    }
}

/// A ratio as a percentage.
pub(crate) fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("héllo", 2), "hé…");
        assert_eq!(excerpt("hé", 2), "hé");
        assert_eq!(age(3.0), "3.0 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(percent(0.5), "50.0 %");
    }
}
