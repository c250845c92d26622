//! Webhook settings.

use crate::{AddressPolicy, EventError};
use neo_batch::{BatcherConfig, LoaderConfig};
use neo_resilience::BreakerConfig;
use serde::Deserialize;
use std::time::Duration;

/// How webhooks are stored, signed and delivered. Load with
/// `neo_core::config::from_env("NEO_EVENTS_WEBHOOKS_")`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Schema of the webhook tables (may be the outbox's).
    pub schema: String,
    /// The neo-queue job kind of one delivery.
    pub job_kind: String,
    /// Longest wait for a connection to an endpoint.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for an endpoint's whole answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bytes of an endpoint's answer kept with the delivery; the rest is not read.
    pub max_response_body: usize,
    /// Largest message body sent; a larger event fails fan-out with a typed error.
    pub max_payload_bytes: usize,
    /// Delay before each retry: the first entry after the first failed attempt, and so on;
    /// its length + 1 is the number of attempts. The default follows Svix: 5 s, 5 min, 30 min,
    /// 2 h, 5 h, 10 h, 10 h (8 attempts over about a day).
    /// From the environment: `5s,5m,30m`.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Each retry delay is moved by up to this fraction either way.
    pub retry_jitter: f64,
    /// `Retry-After` (on 429 and 503) is honoured up to this long.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Which addresses endpoints may resolve to.
    pub addresses: AddressPolicy,
    /// Refuse `http://` endpoint URLs.
    pub require_https: bool,
    /// `User-Agent` of delivery requests.
    pub user_agent: String,
    /// How long an old secret keeps signing after [`rotate_secret`](crate::Webhooks::rotate_secret).
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// Per-endpoint circuit breaker (in each process). It pauses sends to an endpoint that
    /// looks **down**, not to one that is flaky: only attempts the receiver did not answer
    /// (connection refused, timeouts, a broken answer) and answers 5xx, 408 and 429 count as
    /// failures; other answers show the receiver is up. Its failure threshold is
    /// [`down_failure_rate`](Self::down_failure_rate), not `breaker.failure_rate`, and it
    /// judges at least [`MIN_JUDGED_ATTEMPTS`](Self::MIN_JUDGED_ATTEMPTS) attempts.
    pub breaker: BreakerConfig,
    /// The endpoint breaker opens when at least this fraction (0–1] of the attempts in its
    /// window failed. The default, 0.9, keeps a flaky receiver (one failing up to half its
    /// requests, at random or in a pattern) getting traffic, each message retried on its own
    /// schedule, as Svix does; a receiver that is down fails them all and is paused.
    /// From the environment: `..._DOWN_FAILURE_RATE=0.9`.
    pub down_failure_rate: f64,
    /// Delivery status updates are written in batches.
    pub status_writes: BatcherConfig,
    /// The jobs of inline attempts that settled their deliveries are withdrawn in batches:
    /// one statement, and one commit, for the attempts settling together. No linger by
    /// default: an attempt alone is withdrawn at once, and batches grow while a flush is in
    /// flight.
    pub withdrawals: BatcherConfig,
    /// Deliveries starting together are read in one query (`cache` is always off).
    pub target_reads: LoaderConfig,
    /// The delivery read and the status write are prepared statements, each probing every
    /// delivery's partition by its primary key; one that takes longer than this on the server
    /// per delivery it reads or writes (`..._REPLAN_AFTER_PER_DELIVERY=1ms`) makes both be
    /// prepared and planned again, on every connection, for the partitions as they are then
    /// ([`neo_db::Replanning`]): a plan made while today's partition was nearly empty reads it
    /// whole for each delivery until the partition is analysed. 1 ms by default, against
    /// 10–30 µs per delivery measured in a drain (batches of 30–60), while such a plan passes
    /// it once the partition holds a few thousand deliveries; zero never replans.
    #[serde(with = "humantime_serde")]
    pub replan_after_per_delivery: Duration,
    /// Most idle connections kept per endpoint host. The pool never holds more than were in
    /// flight to the host at once, which the worker's `concurrency` bounds: keep this at least
    /// that high, or connections are closed and reopened under load (measured: a cap of 32
    /// under 256 deliveries in flight closed 8,450 connections in a 20,000-delivery run and
    /// cost about 15% of the delivery rate). Idle connections close after 90 s.
    pub pool_max_idle_per_host: usize,
    /// Strict mode: [`migrate`](crate::Webhooks::migrate) refuses to go on while any endpoint
    /// holds a plain-text secret or header value (needs [`Webhooks::sealed`](crate::Webhooks::sealed)).
    pub require_sealed: bool,
    /// How [`Webhooks::reseal`](crate::Webhooks::reseal) moves endpoints to the current key.
    pub reseal: ResealConfig,
    /// First attempts [`fan_out`](crate::Webhooks::fan_out) may make itself, at once after
    /// its commit, instead of waiting for a worker to be woken and claim the job: the idle
    /// path (one event per transaction) then crosses one wake-up instead of two. A fan-out
    /// goes inline only when all its non-FIFO deliveries fit the free slots (a backlog takes
    /// the worker path; so does a delivery to an endpoint with a
    /// [region](crate::NewEndpoint::region), which only its region's workers send). Each
    /// inline delivery's job is still enqueued in the fan-out's
    /// transaction, due after [`inline_backstop`](Self::inline_backstop) (the first one if
    /// this process died); a failed inline attempt moves it to its retry's time (the retry
    /// schedule, or the receiver's `Retry-After`), so retries keep their timing, and one that
    /// delivered (or found the delivery dead) cancels it. 32 by default; 0 turns it off: every
    /// first attempt goes through a worker's claim. From the environment:
    /// `..._INLINE_ATTEMPTS=0`.
    pub inline_attempts: usize,
    /// How long after the longest possible inline attempt (`request_timeout`) its job is due,
    /// for the attempt's record to be written (1 s by default): the time a delivery whose
    /// inline attempt was cut off by a crash waits for its job.
    #[serde(with = "humantime_serde")]
    pub inline_backstop_margin: Duration,
    /// Rounds [`Webhooks::dispatch`](crate::Webhooks::dispatch) keeps in flight: a round
    /// woken while others commit claims the events they skip (`SKIP LOCKED`), so an event
    /// does not wait behind another round's commit flush. At least 1.
    pub dispatch_rounds: usize,
    /// Send the W3C trace context of a delivery's event as its request's `traceparent` (and
    /// `tracestate`) headers, so the receiver's work joins the trace of the request that
    /// published the event. Off by default: it tells receivers your trace ids.
    /// From the environment: `..._SEND_TRACE_CONTEXT=true`.
    pub send_trace_context: bool,
    /// Most deliveries of each status (delivered, dead, pending) that
    /// [`endpoint_stats`](crate::Webhooks::endpoint_stats) reads, the most recent first: it
    /// bounds that query however busy the endpoint. At least 1.
    pub stats_max_deliveries: u32,
    /// Attempts kept per delivery in its attempt history
    /// ([`delivery_attempts`](crate::Webhooks::delivery_attempts)): each attempt's outcome,
    /// answer, duration and an excerpt of the response, written in the statement that
    /// records the attempt. A delivery's latest this many are kept (a ring: attempt `n` takes
    /// the place of attempt `n - attempt_history`). A delivery that succeeds at its first
    /// attempt writes no history row (its own row holds that attempt), so the cost falls on
    /// retries only: a row per failed or later attempt. 0 keeps none, and the status write
    /// is then the plain update.
    pub attempt_history: u32,
    /// Characters of an attempt's response body and error kept in its history.
    pub attempt_excerpt_chars: u32,
    /// How long the event type schemas a process looked up are used before being read
    /// again: a schema registered by another process is enforced here within this long.
    #[serde(with = "humantime_serde")]
    pub schema_cache_ttl: Duration,
    /// New and re-pointed endpoints start pending verification: no delivery is sent to them
    /// (events fanned out meanwhile wait) until the receiver answers the signed challenge of
    /// [`send_verification`](crate::Webhooks::send_verification). Off by default.
    pub require_verification: bool,
    /// How long a verification challenge can be answered.
    #[serde(with = "humantime_serde")]
    pub verification_ttl: Duration,
    /// How the deliveries are partitioned by `created_at` and retired
    /// ([`maintain_partitions`](crate::Webhooks::maintain_partitions)); from the environment
    /// as `NEO_EVENTS_WEBHOOKS_PARTITIONS__RETENTION` etc.
    pub partitions: crate::PartitionConfig,
}

/// How a re-seal pass runs: bounded batches, each in its own short transaction, with a pause
/// between them so deliveries and endpoint changes keep going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ResealConfig {
    /// Endpoints re-sealed per transaction (at least 1).
    pub batch_size: u32,
    /// Pause between batches.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
}

impl Default for ResealConfig {
    fn default() -> Self {
        ResealConfig {
            batch_size: 100,
            pause: Duration::from_millis(10),
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        WebhookConfig {
            schema: "neo_events".to_owned(),
            job_kind: "neo.webhook.deliver".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_response_body: 4 * 1024,
            max_payload_bytes: 256 * 1024,
            retry_schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            retry_jitter: 0.2,
            max_retry_after: minutes(60),
            addresses: AddressPolicy::default(),
            require_https: true,
            user_agent: concat!("neo-events/", env!("CARGO_PKG_VERSION")).to_owned(),
            secret_overlap: minutes(24 * 60),
            breaker: BreakerConfig {
                failure_rate: 0.9,
                minimum_calls: 20,
                window_calls: 50,
                open_for: Duration::from_secs(30),
                ..BreakerConfig::default()
            },
            down_failure_rate: 0.9,
            status_writes: BatcherConfig {
                max_batch: 500,
                linger: Duration::from_millis(2),
                ..BatcherConfig::default()
            },
            withdrawals: BatcherConfig {
                max_batch: 500,
                linger: Duration::ZERO,
                ..BatcherConfig::default()
            },
            target_reads: LoaderConfig {
                window: Duration::ZERO,
                max_batch: 500,
                cache: false,
            },
            replan_after_per_delivery: Duration::from_millis(1),
            pool_max_idle_per_host: 1_024,
            require_sealed: false,
            reseal: ResealConfig::default(),
            inline_attempts: 32,
            inline_backstop_margin: Duration::from_secs(1),
            dispatch_rounds: 4,
            send_trace_context: false,
            stats_max_deliveries: 10_000,
            attempt_history: 20,
            attempt_excerpt_chars: 1_024,
            schema_cache_ttl: Duration::from_secs(30),
            require_verification: false,
            verification_ttl: minutes(10),
            partitions: crate::PartitionConfig::default(),
        }
    }
}

impl WebhookConfig {
    /// The fewest attempts an endpoint breaker judges (its `minimum_calls` and
    /// `window_calls` are raised to this): a verdict from fewer would open on a flaky
    /// receiver's bad luck (failing half its requests at random, 9 of 10 attempts fail 1% of
    /// the time; 18 of 20, 0.02%).
    pub const MIN_JUDGED_ATTEMPTS: u32 = 20;

    /// Attempts per delivery: the first one plus one per retry delay.
    pub fn max_attempts(&self) -> i32 {
        i32::try_from(self.retry_schedule.len() + 1).unwrap_or(i32::MAX)
    }

    pub(crate) fn validate(&self) -> Result<(), EventError> {
        let invalid = |reason: &str| EventError::Invalid {
            what: "webhook configuration",
            reason: reason.to_owned(),
        };
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid(
                "connect_timeout and request_timeout must be positive",
            ));
        }
        if self.dispatch_rounds == 0 {
            return Err(invalid("dispatch_rounds must be at least 1"));
        }
        self.partitions.validate()?;
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err(invalid("retry_jitter must be in [0, 1)"));
        }
        if self.stats_max_deliveries == 0 {
            return Err(invalid("stats_max_deliveries must be at least 1"));
        }
        if self.attempt_history > 1_000 {
            return Err(invalid("attempt_history must be at most 1000"));
        }
        if self.max_payload_bytes == 0 {
            return Err(invalid("max_payload_bytes must be at least 1"));
        }
        if !(self.down_failure_rate > 0.0 && self.down_failure_rate <= 1.0) {
            return Err(invalid("down_failure_rate must be in (0, 1]"));
        }
        self.endpoint_breaker()
            .validate()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(())
    }

    /// The settings of each endpoint's breaker: `breaker` with `down_failure_rate` as its
    /// threshold, judging no fewer than [`MIN_JUDGED_ATTEMPTS`](Self::MIN_JUDGED_ATTEMPTS) attempts.
    pub(crate) fn endpoint_breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_rate: self.down_failure_rate,
            minimum_calls: self.breaker.minimum_calls.max(Self::MIN_JUDGED_ATTEMPTS),
            window_calls: self.breaker.window_calls.max(Self::MIN_JUDGED_ATTEMPTS),
            ..self.breaker
        }
    }

    /// How long after an inline first attempt its job is due: longer than any attempt can
    /// take (`request_timeout`), so the job never sends while the inline attempt still may,
    /// plus [`inline_backstop_margin`](Self::inline_backstop_margin). A failed attempt moves
    /// the job to its retry's time, so this matters only when the process died meanwhile.
    pub fn inline_backstop(&self) -> Duration {
        self.request_timeout + self.inline_backstop_margin
    }

    /// The delay after failed attempt number `attempt` (1-based), jittered; `None` when it was
    /// the last attempt.
    pub(crate) fn retry_delay(&self, attempt: i32) -> Option<Duration> {
        let index = usize::try_from(attempt - 1).ok()?;
        let base = *self.retry_schedule.get(index)?;
        let spread = self.retry_jitter * (2.0 * rand::random::<f64>() - 1.0);
        Some(base.mul_f64(1.0 + spread))
    }
}

/// A list of durations, as a sequence (`["5s", "5m"]`) or one comma-separated text (`5s,5m`,
/// as environment variables give it).
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<humantime_serde::Serde<Duration>>),
        Text(String),
    }
    match Form::deserialize(deserializer)? {
        Form::List(list) => Ok(list
            .into_iter()
            .map(humantime_serde::Serde::into_inner)
            .collect()),
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                humantime_serde::re::humantime::parse_duration(part)
                    .map_err(|e| serde::de::Error::custom(format!("retry_schedule {part:?}: {e}")))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_breaker_judges_down_not_flaky() {
        let config = WebhookConfig::default();
        assert_eq!(config.endpoint_breaker().failure_rate, 0.9);
        // Setting part of the breaker (its generic failure rate is 0.5) keeps the webhook
        // threshold.
        let partial: WebhookConfig =
            serde_json::from_value(serde_json::json!({ "breaker": { "open_for": "1s" } })).unwrap();
        assert_eq!(partial.endpoint_breaker().failure_rate, 0.9);
        assert_eq!(partial.endpoint_breaker().open_for, Duration::from_secs(1));
        // Short windows are widened to a sample that can tell down from unlucky.
        let short = WebhookConfig {
            breaker: BreakerConfig {
                minimum_calls: 5,
                window_calls: 10,
                ..BreakerConfig::default()
            },
            ..WebhookConfig::default()
        };
        assert_eq!(
            short.endpoint_breaker().minimum_calls,
            WebhookConfig::MIN_JUDGED_ATTEMPTS
        );
        assert_eq!(
            short.endpoint_breaker().window_calls,
            WebhookConfig::MIN_JUDGED_ATTEMPTS
        );
        for bad in [0.0, 1.5, f64::NAN] {
            let config = WebhookConfig {
                down_failure_rate: bad,
                ..WebhookConfig::default()
            };
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schedule_reads_as_a_list_or_as_text() {
        let from_list: WebhookConfig =
            serde_json::from_value(serde_json::json!({ "retry_schedule": ["1s", "2m"] })).unwrap();
        let from_text: WebhookConfig =
            serde_json::from_value(serde_json::json!({ "retry_schedule": "1s, 2m" })).unwrap();
        let expected = vec![Duration::from_secs(1), Duration::from_secs(120)];
        assert_eq!(from_list.retry_schedule, expected);
        assert_eq!(from_text.retry_schedule, expected);
        assert_eq!(from_text.max_attempts(), 3);
        let rate: WebhookConfig =
            serde_json::from_value(serde_json::json!({ "down_failure_rate": 0.75 })).unwrap();
        assert_eq!(rate.endpoint_breaker().failure_rate, 0.75);
        assert!(
            serde_json::from_value::<WebhookConfig>(
                serde_json::json!({ "retry_schedule": "soon" })
            )
            .is_err()
        );
    }

    #[test]
    fn retry_delays_follow_the_schedule_within_the_jitter() {
        let config = WebhookConfig::default();
        for _ in 0..100 {
            let delay = config.retry_delay(1).unwrap();
            assert!(
                delay >= Duration::from_secs(4) && delay <= Duration::from_secs(6),
                "{delay:?}"
            );
        }
        assert!(config.retry_delay(8).is_none(), "8 attempts in all");
        assert_eq!(config.max_attempts(), 8);
    }
}
