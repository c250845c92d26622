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
    /// Latest deliveries per endpoint that its health (success rate, p50/p99) covers.
    pub health_window: u32,
    /// Characters of an error, a response body or a payload shown before it is cut.
    pub excerpt_chars: usize,
    /// The cookie the bearer-token login sets (HttpOnly, SameSite=Strict, on `base_path`).
    pub cookie_name: String,
    /// Sessions waiting on locks listed at most on the database page.
    pub max_lock_waits: u32,
    /// Counts (jobs per state, pending events) stop here and show as `N+`: a capped count
    /// reads at most this many index entries, so a page stays fast with millions of rows.
    pub count_cap: i64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            title: "neo console".to_owned(),
            base_path: "/ops".to_owned(),
            page_size: 50,
            health_window: 200,
            excerpt_chars: 2_000,
            cookie_name: "neo_console".to_owned(),
            max_lock_waits: 20,
            count_cap: 10_000,
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
