//! Circuit breaker: closed, open, half-open.

use crate::{Error, Refusal};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Breaker settings. Load from `NEO_RESILIENCE_BREAKER__*` through
/// [`ResilienceConfig`](crate::ResilienceConfig).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Open when at least this fraction (0.0–1.0) of the calls in the window failed.
    pub failure_rate: f64,
    /// Calls slower than this count as slow (`None`: speed is not judged).
    #[serde(with = "humantime_serde")]
    pub slow_call_threshold: Option<Duration>,
    /// Open when at least this fraction of the calls in the window were slow.
    pub slow_call_rate: f64,
    /// No verdict before the window holds this many calls.
    pub minimum_calls: u32,
    /// The window: the last this-many calls...
    pub window_calls: u32,
    /// ...or, when set, the calls of this last stretch of time.
    #[serde(with = "humantime_serde")]
    pub window_duration: Option<Duration>,
    /// How long the breaker stays open before letting probes through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Probes let through while half-open. Their outcomes are judged like the closed window's,
    /// as resilience4j judges `permittedNumberOfCallsInHalfOpenState`: once all have reported,
    /// the breaker closes when the probes' failure rate (and slow-call rate, when speed is
    /// judged) is below its threshold, and opens again otherwise. It opens as soon as the
    /// probes reported so far already reach a threshold, since the rest cannot change that.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate: 0.5,
            slow_call_threshold: None,
            slow_call_rate: 1.0,
            minimum_calls: 10,
            window_calls: 50,
            window_duration: None,
            open_for: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<(), Refusal> {
        let rate = |r: f64| r > 0.0 && r <= 1.0;
        if !rate(self.failure_rate) || !rate(self.slow_call_rate) {
            return Err(Error::Config(
                "breaker.failure_rate and breaker.slow_call_rate must be in (0, 1]".into(),
            ));
        }
        if self.minimum_calls == 0 || self.window_calls == 0 || self.half_open_probes == 0 {
            return Err(Error::Config(
                "breaker.minimum_calls, window_calls and half_open_probes must be at least 1"
                    .into(),
            ));
        }
        if self.window_duration.is_some_and(|d| d.is_zero()) {
            return Err(Error::Config(
                "breaker.window_duration must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until `open_for` has passed.
    Open,
    /// A few probes are let through to test recovery.
    HalfOpen,
}

impl BreakerState {
    fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A state change, sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Slow,
    Failure,
}

#[derive(Debug)]
struct State {
    state: BreakerState,
    window: VecDeque<(Instant, Outcome)>,
    opened_at: Instant,
    probes_in_flight: u32,
    probes: ProbeCounts,
}

/// The outcomes of the probes reported in this half-open spell.
#[derive(Debug, Clone, Copy, Default)]
struct ProbeCounts {
    recorded: u32,
    failed: u32,
    slow: u32,
}

/// What the half-open probes say so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeVerdict {
    /// Not all probes have reported, and those that have do not settle it.
    Pending,
    /// The failure or slow-call rate reaches its threshold.
    Open,
    /// All probes reported, both rates below their thresholds.
    Close,
}

impl ProbeCounts {
    fn add(&mut self, outcome: Outcome) {
        self.recorded += 1;
        match outcome {
            Outcome::Success => {}
            Outcome::Slow => self.slow += 1,
            Outcome::Failure => self.failed += 1,
        }
    }

    /// The rates are over all `half_open_probes` probes, so a count that already reaches a
    /// threshold settles the verdict before the last probe reports.
    fn verdict(&self, config: &BreakerConfig) -> ProbeVerdict {
        let probes = f64::from(config.half_open_probes);
        let failures = f64::from(self.failed) / probes;
        let slow = f64::from(self.slow) / probes;
        if failures >= config.failure_rate
            || (config.slow_call_threshold.is_some() && slow >= config.slow_call_rate)
        {
            ProbeVerdict::Open
        } else if self.recorded >= config.half_open_probes {
            ProbeVerdict::Close
        } else {
            ProbeVerdict::Pending
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    /// The `breaker` label of its metrics (the name unless made with `labelled`).
    metric_label: String,
    config: BreakerConfig,
    state: Mutex<State>,
    events: broadcast::Sender<StateChange>,
}

/// A circuit breaker; cheap to clone (clones share the state).
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neo_resilience::{BreakerConfig, CircuitBreaker};
/// let breaker = CircuitBreaker::new("payments", BreakerConfig::default()).unwrap();
/// let answer = breaker.call(|| async { Ok::<_, std::io::Error>(42) }).await;
/// assert_eq!(answer.unwrap(), 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// Permission to make one call; report its outcome with [`Permit::record`]. Dropped without
/// a report (the call was cancelled), it frees its probe slot and counts nothing.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    started: Instant,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<Self, Refusal> {
        let name = name.into();
        Self::labelled(name.clone(), name, config)
    }

    /// A closed breaker whose metrics carry `metric_label` as their `breaker` label instead
    /// of its name: for breakers made per item (an endpoint, a host) whose names would give
    /// the metrics one series per item. Errors and logs still carry `name`.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    pub fn labelled(
        name: impl Into<String>,
        metric_label: impl Into<String>,
        config: BreakerConfig,
    ) -> Result<Self, Refusal> {
        config.validate()?;
        let (events, _) = broadcast::channel(64);
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                name: name.into(),
                metric_label: metric_label.into(),
                config,
                state: Mutex::new(State {
                    state: BreakerState::Closed,
                    window: VecDeque::with_capacity(config.window_calls as usize),
                    opened_at: Instant::now(),
                    probes_in_flight: 0,
                    probes: ProbeCounts::default(),
                }),
                events,
            }),
        })
    }

    /// The breaker's name (in errors, logs and metrics).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state (an open breaker whose `open_for` has passed reports half-open).
    pub fn state(&self) -> BreakerState {
        let mut state = self.lock();
        self.maybe_half_open(&mut state);
        state.state
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        neo_core::sync::lock(&self.shared.state)
    }

    fn transition(&self, state: &mut State, to: BreakerState) {
        let from = state.state;
        if from == to {
            return;
        }
        state.state = to;
        state.window.clear();
        state.probes_in_flight = 0;
        state.probes = ProbeCounts::default();
        if to == BreakerState::Open {
            state.opened_at = Instant::now();
        }
        tracing::warn!(breaker = %self.shared.name, from = from.as_str(), to = to.as_str(), "circuit breaker state change");
        metrics::counter!(crate::metric_names::BREAKER_TRANSITIONS_TOTAL, "breaker" => self.shared.metric_label.clone(), "to" => to.as_str())
            .increment(1);
        let _ = self.shared.events.send(StateChange { from, to });
    }

    fn maybe_half_open(&self, state: &mut State) {
        if state.state == BreakerState::Open
            && state.opened_at.elapsed() >= self.shared.config.open_for
        {
            self.transition(state, BreakerState::HalfOpen);
        }
    }

    /// Asks to make a call.
    ///
    /// # Errors
    /// [`Error::Open`] while open, or while half-open with every probe slot taken.
    pub fn try_acquire(&self) -> Result<Permit, Refusal> {
        let mut state = self.lock();
        self.maybe_half_open(&mut state);
        let probe = match state.state {
            BreakerState::Closed => false,
            BreakerState::Open => {
                let retry_after = self
                    .shared
                    .config
                    .open_for
                    .saturating_sub(state.opened_at.elapsed());
                return Err(self.open_error(retry_after));
            }
            BreakerState::HalfOpen => {
                if state.probes_in_flight + state.probes.recorded
                    >= self.shared.config.half_open_probes
                {
                    return Err(self.open_error(Duration::from_millis(100)));
                }
                state.probes_in_flight += 1;
                true
            }
        };
        drop(state);
        Ok(Permit {
            breaker: self.clone(),
            probe,
            started: Instant::now(),
            recorded: false,
        })
    }

    fn open_error(&self, retry_after: Duration) -> Refusal {
        metrics::counter!(crate::metric_names::BREAKER_REJECTIONS_TOTAL, "breaker" => self.shared.metric_label.clone())
            .increment(1);
        Error::Open {
            name: self.shared.name.clone(),
            retry_after,
        }
    }

    fn record(&self, probe: bool, outcome: Option<Outcome>) {
        let config = &self.shared.config;
        let mut state = self.lock();
        if probe {
            state.probes_in_flight = state.probes_in_flight.saturating_sub(1);
        }
        let Some(outcome) = outcome else { return };
        match state.state {
            BreakerState::HalfOpen if probe => {
                state.probes.add(outcome);
                match state.probes.verdict(config) {
                    ProbeVerdict::Pending => {}
                    ProbeVerdict::Open => self.transition(&mut state, BreakerState::Open),
                    ProbeVerdict::Close => self.transition(&mut state, BreakerState::Closed),
                }
            }
            BreakerState::Closed => {
                let now = Instant::now();
                state.window.push_back((now, outcome));
                match config.window_duration {
                    Some(span) => {
                        while state
                            .window
                            .front()
                            .is_some_and(|(at, _)| now.duration_since(*at) > span)
                        {
                            state.window.pop_front();
                        }
                    }
                    None => {
                        while state.window.len() > config.window_calls as usize {
                            state.window.pop_front();
                        }
                    }
                }
                let total = state.window.len();
                if total >= config.minimum_calls as usize {
                    let count =
                        |o: Outcome| state.window.iter().filter(|(_, x)| *x == o).count() as f64;
                    let failures = count(Outcome::Failure) / total as f64;
                    let slow = count(Outcome::Slow) / total as f64;
                    if failures >= config.failure_rate
                        || (config.slow_call_threshold.is_some() && slow >= config.slow_call_rate)
                    {
                        self.transition(&mut state, BreakerState::Open);
                    }
                }
            }
            // A call that started before the breaker opened: its outcome is stale.
            _ => {}
        }
    }

    /// Runs `op` if the breaker allows, and counts its outcome (any `Err` is a failure).
    ///
    /// # Errors
    /// [`Error::Open`] without running `op`, or [`Error::Inner`] with `op`'s error.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(Error::refusal)?;
        let result = op().await;
        permit.record(result.is_ok());
        result.map_err(|source| Error::Inner {
            source,
            attempts: 1,
        })
    }
}

impl Permit {
    /// Reports the call's outcome (its duration is measured from the permit).
    pub fn record(mut self, success: bool) {
        self.recorded = true;
        let outcome = match (success, self.breaker.shared.config.slow_call_threshold) {
            (false, _) => Outcome::Failure,
            (true, Some(slow)) if self.started.elapsed() >= slow => Outcome::Slow,
            (true, _) => Outcome::Success,
        };
        self.breaker.record(self.probe, Some(outcome));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.probe, None);
        }
    }
}
