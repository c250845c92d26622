//! The HTTP side of a delivery: the pooled client, reading a capped answer, `Retry-After`,
//! and transport errors described without the URL.

use super::WebhookConfig;
use crate::EventError;
use crate::ssrf::GuardedResolver;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The pooled client: no redirects, the configured timeouts, and the SSRF-guarding resolver.
pub(super) fn build_client(config: &WebhookConfig) -> Result<reqwest::Client, EventError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .user_agent(config.user_agent.clone())
        .dns_resolver(Arc::new(GuardedResolver(config.addresses)))
        .build()
        .map_err(|e| EventError::Invalid {
            what: "webhook HTTP client",
            reason: e.to_string(),
        })
}

/// Up to `max` bytes of the body, as text (lossy); the rest is not read.
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await? {
            Some(chunk) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

pub(super) fn transport_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    // reqwest's own text names the URL (which may carry a token in its query): only the
    // causes are kept.
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
