//! The HTTP side of a delivery: the pooled client, reading a capped answer, `Retry-After`,
//! and transport errors described without the URL.

use super::WebhookConfig;
use crate::EventError;
use crate::ssrf::GuardedResolver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// `Retry-After` as delta-seconds or an HTTP date in any of the three forms RFC 9110
/// §5.6.7 makes recipients accept (IMF-fixdate, RFC 850, asctime); `None` for anything else
/// and for a date already past.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(SystemTime::now()).ok()
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
    use chrono::Utc;

    /// A whole second about 90 s from now, as `Retry-After` would name it.
    fn in_ninety_seconds() -> chrono::DateTime<Utc> {
        use chrono::SubsecRound;
        (Utc::now() + chrono::Duration::seconds(90)).trunc_subsecs(0)
    }

    fn assert_about_ninety_seconds(value: &str) {
        let parsed = parse_retry_after(value).unwrap_or_else(|| panic!("{value:?} not read"));
        assert!(
            parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90),
            "{value:?} read as {parsed:?}"
        );
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    }

    /// RFC 9110 §5.6.7: a recipient accepts all three date forms.
    #[test]
    fn retry_after_reads_the_three_http_date_forms() {
        let at = in_ninety_seconds();
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        assert_about_ninety_seconds(&at.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        assert_about_ninety_seconds(&at.format("%A, %d-%b-%y %H:%M:%S GMT").to_string());
        // asctime: Sun Nov  6 08:49:37 1994
        assert_about_ninety_seconds(&at.format("%a %b %e %H:%M:%S %Y").to_string());
    }

    #[test]
    fn retry_after_refuses_garbage() {
        for value in [
            "soon",
            "",
            "-5",
            "1.5",
            "Sun, 06 Nov 1994 08:49:37",
            "Someday, 99-Foo-99 99:99:99 GMT",
        ] {
            assert_eq!(parse_retry_after(value), None, "{value:?}");
        }
        // A date already past gives no wait to honour: the schedule decides.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), None);
    }
}
