//! Sampler settings.

use serde::Deserialize;
use std::time::Duration;

/// What the [`Sampler`](crate::Sampler) reads and how often. Load from `NEO_OBSERVE_*` with
/// [`ObserveConfig::from_env`] (feature `env`); lists from the environment are comma-separated
/// (`NEO_OBSERVE_QUEUE_SCHEMAS=neo_queue,billing_jobs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ObserveConfig {
    /// Sample this often (`NEO_OBSERVE_INTERVAL`, e.g. `15s`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The lease's name: samplers with the same name elect one leader among them.
    pub lease_name: String,
    /// How long a won lease lasts without renewal; a leader that stops is replaced after it.
    /// Longer than `interval` (it is renewed every sample).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Schema of the `sampler_leases` table ([`Sampler::migrate`](crate::Sampler::migrate)).
    pub schema: String,
    /// neo-queue schemas to sample (each is a `queue` label value).
    #[serde(deserialize_with = "list")]
    pub queue_schemas: Vec<String>,
    /// neo-events outbox schemas to sample (each is an `outbox` label value).
    #[serde(deserialize_with = "list")]
    pub outbox_schemas: Vec<String>,
    /// neo-events webhook schemas to sample.
    #[serde(deserialize_with = "list")]
    pub webhook_schemas: Vec<String>,
    /// Endpoint health series at most (the worst endpoints; the rest are summed under
    /// `endpoint="other"`), so a tenant with thousands of endpoints adds a bounded number of
    /// series.
    pub max_endpoint_series: usize,
    /// Endpoint health covers deliveries updated within this window.
    #[serde(with = "humantime_serde")]
    pub health_window: Duration,
    /// Counts stop here (a capped `count(*)` reads at most this many rows): depth, pending
    /// events and dead letters above it read as the cap.
    pub count_cap: i64,
    /// Deliveries read at most per sample for endpoint health.
    pub health_scan_cap: i64,
    /// `statement_timeout` of each sampling transaction.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            interval: Duration::from_secs(15),
            lease_name: "neo-observe".to_owned(),
            lease_ttl: Duration::from_secs(45),
            schema: "neo_observe".to_owned(),
            queue_schemas: vec!["neo_queue".to_owned()],
            outbox_schemas: vec!["neo_events".to_owned()],
            webhook_schemas: vec!["neo_events".to_owned()],
            max_endpoint_series: 50,
            health_window: Duration::from_secs(300),
            count_cap: 100_000,
            health_scan_cap: 50_000,
            statement_timeout: Duration::from_secs(2),
        }
    }
}

impl ObserveConfig {
    /// Loads the configuration from `NEO_OBSERVE_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) naming what could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> crate::Result<Self> {
        neo_core::config::from_env("NEO_OBSERVE_")
            .map_err(|e| crate::Error::invalid("configuration", e.to_string()))
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a zero interval, a lease not longer than
    /// the interval, a zero cap or a bad schema name.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        if self.interval.is_zero() {
            return Err(Error::invalid("interval", "must be above zero"));
        }
        if self.lease_ttl <= self.interval {
            return Err(Error::invalid(
                "lease_ttl",
                "must be longer than interval (the leader renews it every sample)",
            ));
        }
        if self.count_cap <= 0 || self.health_scan_cap <= 0 {
            return Err(Error::invalid("count_cap", "caps must be above zero"));
        }
        if self.lease_name.is_empty() {
            return Err(Error::invalid("lease_name", "must not be empty"));
        }
        for schema in std::iter::once(&self.schema)
            .chain(&self.queue_schemas)
            .chain(&self.outbox_schemas)
            .chain(&self.webhook_schemas)
        {
            neo_db::Schema::new(schema)?;
        }
        Ok(())
    }
}

/// A list from serde: a sequence, or one comma-separated string (from the environment).
fn list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Many(Vec<String>),
        One(String),
    }
    Ok(match Either::deserialize(de)? {
        Either::Many(v) => v,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn lists_come_as_sequences_or_comma_separated_strings() {
        let config: ObserveConfig = serde_json::from_str(
            r#"{"queue_schemas": "jobs, billing_jobs", "outbox_schemas": ["a"], "interval": "5s"}"#,
        )
        .unwrap();
        assert_eq!(config.queue_schemas, ["jobs", "billing_jobs"]);
        assert_eq!(config.outbox_schemas, ["a"]);
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(
            config.webhook_schemas,
            ObserveConfig::default().webhook_schemas
        );
        config.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused_with_what_was_wrong() {
        let bad = |f: fn(&mut ObserveConfig)| {
            let mut config = ObserveConfig::default();
            f(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.lease_ttl = c.interval).contains("lease_ttl"));
        assert!(bad(|c| c.interval = Duration::ZERO).contains("interval"));
        assert!(bad(|c| c.count_cap = 0).contains("count_cap"));
        assert!(bad(|c| c.queue_schemas = vec!["pg_catalog".into()]).contains("system schema"));
        assert!(bad(|c| c.outbox_schemas = vec!["a;drop".into()]).contains("invalid"));
    }
}
