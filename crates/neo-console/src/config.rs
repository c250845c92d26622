//! Console settings.

use serde::{Deserialize, Serialize};

/// How the console renders and pages. Every field has a default; load it from the host's
/// configuration with serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// Shown in every page's title and header.
    pub title: String,
    /// Where the host mounts the router (`/ops`): every link and form action starts with it.
    pub base_path: String,
    /// Rows per page (dead letters, endpoints, deliveries).
    pub page_size: u32,
    /// Most deliveries of each status (delivered, dead, pending), the latest, that an
    /// endpoint's health on the endpoints page reads
    /// ([`neo_events::Webhooks::endpoints_stats`]).
    pub health_window: u32,
    /// How far back an endpoint's health (success rate, p50/p99, pending, dead) looks: the
    /// deliveries last changed within it.
    #[serde(with = "humantime_serde")]
    pub health_period: std::time::Duration,
    /// Characters of an error, a response body or a payload shown before it is cut.
    pub excerpt_chars: usize,
    /// The cookie the bearer-token login sets (HttpOnly, SameSite=Strict, on `base_path`).
    pub cookie_name: String,
    /// Sessions waiting on locks listed at most on the database page.
    pub max_lock_waits: u32,
    /// Statements listed on the database page (by total time beside their baseline, or by
    /// mean time without one).
    pub top_statements: u32,
    /// Counts (jobs per state, pending events) stop here and show as `N+`: a capped count
    /// reads at most this many index entries, so a page stays fast with millions of rows.
    pub count_cap: i64,
    /// How often the throughput chart samples each queue's counters (one read of
    /// `pg_stat_user_tables` per sample; see the queues page).
    #[serde(with = "humantime_serde")]
    pub throughput_sample: std::time::Duration,
    /// How far back the throughput chart goes (samples are kept in memory for this long).
    #[serde(with = "humantime_serde")]
    pub throughput_window: std::time::Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            title: "neo console".to_owned(),
            base_path: "/ops".to_owned(),
            page_size: 50,
            health_window: 200,
            health_period: std::time::Duration::from_secs(3_600),
            excerpt_chars: 2_000,
            cookie_name: "neo_console".to_owned(),
            max_lock_waits: 20,
            top_statements: 20,
            count_cap: 10_000,
            throughput_sample: std::time::Duration::from_secs(10),
            throughput_window: std::time::Duration::from_secs(30 * 60),
        }
    }
}

impl ConsoleConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) naming the first bad setting.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.base_path.is_empty()
            || self.base_path.starts_with('/') && !self.base_path.ends_with('/'))
        {
            return Err(crate::Error::invalid(
                "base_path",
                "must be empty or start with '/' and not end with '/'",
            ));
        }
        if self.page_size == 0 || self.page_size > 1_000 {
            return Err(crate::Error::invalid("page_size", "must be 1..=1000"));
        }
        if self.health_window == 0 || self.health_window > 10_000 {
            return Err(crate::Error::invalid("health_window", "must be 1..=10000"));
        }
        if self.health_period.is_zero() {
            return Err(crate::Error::invalid("health_period", "must be positive"));
        }
        if self.throughput_sample < std::time::Duration::from_millis(100)
            || self.throughput_window < self.throughput_sample
            || self.throughput_window.as_secs_f64() / self.throughput_sample.as_secs_f64()
                > 100_000.0
        {
            return Err(crate::Error::invalid(
                "throughput_sample",
                "must be at least 100 ms, at most throughput_window, and at most 100,000 samples of it",
            ));
        }
        if self.count_cap < 1 {
            return Err(crate::Error::invalid("count_cap", "must be at least 1"));
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(crate::Error::invalid(
                "cookie_name",
                "must be letters, digits, '_' or '-'",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(ConsoleConfig::default().validate().is_ok());
        let bad = ConsoleConfig {
            base_path: "/ops/".into(),
            ..ConsoleConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("base_path")
        );
        let bad = ConsoleConfig {
            page_size: 0,
            ..ConsoleConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("page_size")
        );
        let bad = ConsoleConfig {
            cookie_name: "a b".into(),
            ..ConsoleConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("cookie_name")
        );
    }
}
