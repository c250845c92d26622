//! Periodic jobs: jobs enqueued on a cron schedule or a fixed interval, exactly once per tick
//! however many instances run the scheduler.
//!
//! A [`PeriodicJobs`] registry holds [`Periodic`] definitions (a unique name, a
//! [`Schedule`], what to enqueue on a tick, a [`CatchUp`] policy). Every instance may run it
//! ([`PeriodicJobs::run`], or beside a worker with [`Worker::periodic`](crate::Worker::periodic)):
//! a round reads each periodic job's last tick from the `periodic_jobs` table and enqueues the
//! due ticks of all of them in one statement that also advances their last ticks from the
//! values read, so only the first instance to commit a tick enqueues it (see the queue's
//! `periodic` module). Each job carries the unique key `periodic:<name>:<tick>` (RFC 3339,
//! UTC), so a tick is never pending twice either.

mod schedule;

pub use schedule::{CronField, Schedule};

use crate::queue::Advances;
use crate::{Error, NewJob, Queue, Result};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Deserializer};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// What a scheduler does with the ticks a periodic job missed while no scheduler ran (a
/// deploy, an outage). Ticks missed while the job was paused are never caught up.
///
/// Parsed from `"skip"`, `"once"` or `"all:<max>"` (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CatchUp {
    /// Run only a tick that is on time: the latest due tick if it is at most
    /// [`PeriodicConfig::skip_grace`] late; missed ticks are dropped. The default, as in
    /// River, Oban and graphile-worker.
    #[default]
    Skip,
    /// Run the latest missed tick once, however late, for all the missed ones.
    Once,
    /// Run every missed tick, each as its own job with its own tick, but at most the latest
    /// `max` of them (the older ones are dropped).
    All {
        /// Most ticks enqueued in one catch-up (at least 1).
        max: u32,
    },
}

impl FromStr for CatchUp {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        match text {
            "skip" => return Ok(CatchUp::Skip),
            "once" => return Ok(CatchUp::Once),
            _ => {}
        }
        text.strip_prefix("all:")
            .and_then(|max| max.trim().parse::<u32>().ok())
            .filter(|max| *max >= 1)
            .map(|max| CatchUp::All { max })
            .ok_or_else(|| {
                Error::invalid(
                    "catch-up policy",
                    format!("{text:?}: use skip, once or all:<max> with max >= 1"),
                )
            })
    }
}

impl<'de> Deserialize<'de> for CatchUp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a [`PeriodicJobs`] scheduler runs. Load from `NEO_PERIODIC_*` with
/// [`PeriodicConfig::from_env`] (feature `env`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PeriodicConfig {
    /// A scheduler sleeps until the next tick of its periodic jobs, but at most this long
    /// (`NEO_PERIODIC_POLL_INTERVAL`), so that it sees new rows and retries after an error.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// With [`CatchUp::Skip`], a tick at most this late still runs
    /// (`NEO_PERIODIC_SKIP_GRACE`); a later one counts as missed.
    #[serde(with = "humantime_serde")]
    pub skip_grace: Duration,
    /// The catch-up policy of periodic jobs that do not set their own
    /// (`NEO_PERIODIC_CATCH_UP=skip|once|all:<max>`).
    pub catch_up: CatchUp,
}

impl Default for PeriodicConfig {
    fn default() -> Self {
        PeriodicConfig {
            poll_interval: Duration::from_secs(5),
            skip_grace: Duration::from_secs(60),
            catch_up: CatchUp::Skip,
        }
    }
}

impl PeriodicConfig {
    /// Loads the configuration from `NEO_PERIODIC_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> Result<Self> {
        neo_core::config::from_env("NEO_PERIODIC_")
            .map_err(|e| Error::invalid("periodic configuration", e.to_string()))
    }
}

/// What a periodic job enqueues for a tick.
type Make = Arc<dyn Fn(DateTime<Utc>) -> Result<Vec<NewJob>> + Send + Sync>;

/// One periodic job: a unique name, a schedule and what it enqueues on each tick.
#[derive(Clone)]
pub struct Periodic {
    name: String,
    schedule: Schedule,
    catch_up: Option<CatchUp>,
    make: Make,
}

impl fmt::Debug for Periodic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

/// Longest periodic job name, in bytes.
pub const MAX_PERIODIC_NAME_LEN: usize = 128;

impl Periodic {
    /// A job of `kind` with `payload` on every tick of `schedule`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or kind, or a payload that does not serialize.
    pub fn job(
        name: &str,
        schedule: Schedule,
        kind: &str,
        payload: &impl serde::Serialize,
    ) -> Result<Self> {
        let template = NewJob::new(kind, payload)?;
        let (kind, payload) = (template.kind, template.payload);
        Self::each_tick(name, schedule, move |_tick| {
            Ok(vec![NewJob::new(&kind, &payload)?])
        })
    }

    /// The jobs `make` builds for each tick (given the tick): one, several (one per tenant,
    /// say: they are enqueued in the same statement), or none. A job without a unique key gets
    /// `periodic:<name>:<tick>` (`:<index>` appended when there are several), one without a
    /// `run_at` gets the tick. If `make` fails, the tick is left for the next round. In a
    /// queue under row-level security the jobs may name different tenants (the round runs on
    /// the system role); a job without one gets the acting tenant.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty name or one longer than [`MAX_PERIODIC_NAME_LEN`].
    pub fn each_tick<F>(name: &str, schedule: Schedule, make: F) -> Result<Self>
    where
        F: Fn(DateTime<Utc>) -> Result<Vec<NewJob>> + Send + Sync + 'static,
    {
        if name.trim().is_empty() || name.len() > MAX_PERIODIC_NAME_LEN {
            return Err(Error::invalid(
                "periodic job name",
                format!("{name:?}: 1 to {MAX_PERIODIC_NAME_LEN} bytes, not blank"),
            ));
        }
        Ok(Periodic {
            name: name.to_owned(),
            schedule,
            catch_up: None,
            make: Arc::new(make),
        })
    }

    /// This periodic job's own catch-up policy (else [`PeriodicConfig::catch_up`]).
    #[must_use]
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = Some(policy);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

/// A registered periodic job as [`PeriodicJobs::list`] shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeriodicStatus {
    /// The name.
    pub name: String,
    /// The schedule, as text.
    pub schedule: String,
    /// The catch-up policy in force.
    pub catch_up: CatchUp,
    /// The last tick stored (enqueued or passed); `None` before any scheduler registered it.
    pub last_tick: Option<DateTime<Utc>>,
    /// When it runs next: the first tick after now; `None` while paused.
    pub next_run: Option<DateTime<Utc>>,
    /// When it was paused, if it is.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it.
    pub paused_by: Option<String>,
}

/// What one round of a scheduler did ([`PeriodicJobs::tick_at`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// Periodic jobs this round advanced and enqueued for (or whose due ticks their catch-up
    /// policy dropped).
    pub advanced: Vec<String>,
    /// Paused periodic jobs whose ticks this round passed without enqueuing.
    pub paused: Vec<String>,
    /// Periodic jobs with due ticks that another instance advanced first: nothing enqueued.
    pub lost: Vec<String>,
    /// Periodic jobs whose jobs could not be built (their `make` failed): left for the next
    /// round.
    pub failed: Vec<String>,
    /// Jobs enqueued.
    pub enqueued: u64,
}

/// The periodic jobs of a queue and their scheduler; cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
/// use neo_queue::{CatchUp, Periodic, PeriodicConfig, PeriodicJobs, Schedule};
/// let periodic = PeriodicJobs::new(queue, PeriodicConfig::default())
///     .register(Periodic::job(
///         "nightly-report",
///         Schedule::cron("0 2 * * *")?.in_time_zone("Europe/Berlin")?,
///         "report.build",
///         &serde_json::json!({"scope": "all"}),
///     )?
///     .catch_up(CatchUp::Once))?
///     .register(Periodic::job("heartbeat", "every 30s".parse()?, "ping", &())?)?;
/// // On every instance; each tick is enqueued once across all of them.
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// periodic.run(async { let _ = stopped.await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PeriodicJobs {
    queue: Queue,
    config: Arc<PeriodicConfig>,
    jobs: Arc<Vec<Periodic>>,
}

impl PeriodicJobs {
    /// An empty registry for `queue` (run [`Queue::migrate`] first: it creates the
    /// `periodic_jobs` table).
    pub fn new(queue: Queue, config: PeriodicConfig) -> Self {
        PeriodicJobs {
            queue,
            config: Arc::new(config),
            jobs: Arc::new(Vec::new()),
        }
    }

    /// Registers `periodic`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a periodic job of that name is already registered.
    pub fn register(mut self, periodic: Periodic) -> Result<Self> {
        if self.jobs.iter().any(|p| p.name == periodic.name) {
            return Err(Error::invalid(
                "periodic job name",
                format!("{:?} is registered twice", periodic.name),
            ));
        }
        Arc::make_mut(&mut self.jobs).push(periodic);
        Ok(self)
    }

    /// The registered periodic jobs.
    pub fn jobs(&self) -> &[Periodic] {
        &self.jobs
    }

    /// The queue they enqueue into.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn policy(&self, periodic: &Periodic) -> CatchUp {
        periodic.catch_up.unwrap_or(self.config.catch_up)
    }

    /// One round as at `now`: enqueues the due ticks of every registered periodic job in one
    /// statement (registering the ones not stored yet, with `now` as their last tick). The
    /// scheduler of [`run`](Self::run) calls it with the current time; tests and tools may
    /// pass any.
    ///
    /// # Errors
    /// A database error: nothing was enqueued or advanced.
    pub async fn tick_at(&self, now: DateTime<Utc>) -> Result<TickReport> {
        let mut conn = self.queue.periodic_connection().await?;
        let report = self.tick_in(&mut conn, now).await?;
        conn.finish().await?;
        Ok(report)
    }

    /// [`tick_at`](Self::tick_at) on `conn`: inside the caller's transaction when it has one,
    /// so that the tick is enqueued only if it commits.
    ///
    /// # Errors
    /// As for [`tick_at`](Self::tick_at).
    pub async fn tick_in(
        &self,
        conn: &mut sqlx::PgConnection,
        now: DateTime<Utc>,
    ) -> Result<TickReport> {
        let mut report = TickReport::default();
        if self.jobs.is_empty() {
            return Ok(report);
        }
        let names: Vec<String> = self.jobs.iter().map(|p| p.name.clone()).collect();
        let known = self.queue.periodic_known(conn, &names, now).await?;
        let known: HashMap<&str, _> = known.iter().map(|k| (k.name.as_str(), k)).collect();
        let mut advances = Advances::default();
        let (mut owners, mut jobs) = (Vec::new(), Vec::new());
        for periodic in self.jobs.iter() {
            let Some(stored) = known.get(periodic.name.as_str()) else {
                continue;
            };
            let Some(latest) = periodic
                .schedule
                .latest_at_or_before(now)
                .filter(|t| *t > stored.last_tick)
            else {
                continue;
            };
            let ticks = match self.policy(periodic) {
                CatchUp::Skip => {
                    let late = now.signed_duration_since(latest);
                    let grace =
                        TimeDelta::from_std(self.config.skip_grace).unwrap_or(TimeDelta::MAX);
                    if late <= grace {
                        vec![latest]
                    } else {
                        Vec::new()
                    }
                }
                CatchUp::Once => vec![latest],
                CatchUp::All { max } => periodic.schedule.ticks_between(
                    stored.last_tick,
                    now,
                    usize::try_from(max).unwrap_or(usize::MAX),
                ),
            };
            let mut built = Vec::new();
            if !stored.paused {
                match build(periodic, &ticks) {
                    Ok(b) => built = b,
                    Err(error) => {
                        tracing::warn!(periodic = %periodic.name, %error, "periodic job's jobs could not be built; retried next round");
                        report.failed.push(periodic.name.clone());
                        continue;
                    }
                }
            }
            advances.names.push(periodic.name.clone());
            advances.prev.push(stored.last_tick);
            advances.ticks.push(latest);
            owners.extend(std::iter::repeat_n(periodic.name.clone(), built.len()));
            jobs.extend(built);
        }
        if advances.names.is_empty() {
            return Ok(report);
        }
        let written = self
            .queue
            .periodic_round(conn, &advances, &owners, jobs)
            .await?;
        let moved: HashSet<&str> = written
            .active
            .iter()
            .chain(&written.paused)
            .map(String::as_str)
            .collect();
        report.lost = advances
            .names
            .iter()
            .filter(|n| !moved.contains(n.as_str()))
            .cloned()
            .collect();
        report.advanced = written.active;
        report.paused = written.paused;
        report.enqueued = written.enqueued;
        if report.enqueued > 0 {
            tracing::debug!(enqueued = report.enqueued, periodic = ?report.advanced, "periodic jobs enqueued");
        }
        Ok(report)
    }

    /// The first tick of any registered periodic job after `now`.
    pub fn next_tick_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.jobs
            .iter()
            .filter_map(|p| p.schedule.next_after(now))
            .min()
    }

    /// Runs rounds until `shutdown` completes: one now, then one at each next tick of its
    /// periodic jobs (or after [`PeriodicConfig::poll_interval`], whichever is first). A
    /// round in progress when `shutdown` completes finishes first. A failed round is logged
    /// and retried at the next wake-up.
    ///
    /// # Errors
    /// The first round's error when it is not one that passes (not retryable: the
    /// `periodic_jobs` table missing because the queue was not migrated, a tenant-isolated
    /// queue without a tenant): the scheduler does not start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        use neo_core::HasErrorKind;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut first = true;
        loop {
            match self.tick_at(Utc::now()).await {
                Err(error) if first && !error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "periodic round failed; retried at the next wake-up");
                }
                Ok(_) => {}
            }
            first = false;
            let now = Utc::now();
            let wait = self
                .next_tick_after(now)
                .and_then(|next| next.signed_duration_since(now).to_std().ok())
                .map_or(self.config.poll_interval, |until| {
                    // A millisecond past the tick: the round then sees it as due.
                    (until + Duration::from_millis(1)).min(self.config.poll_interval)
                });
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The registered periodic jobs with their stored state and next run time.
    ///
    /// # Errors
    /// A database error.
    pub async fn list(&self) -> Result<Vec<PeriodicStatus>> {
        let stored = self.queue.periodic_jobs().await?;
        let stored: HashMap<&str, _> = stored.iter().map(|s| (s.name.as_str(), s)).collect();
        let now = Utc::now();
        Ok(self
            .jobs
            .iter()
            .map(|p| {
                let state = stored.get(p.name.as_str());
                let paused_at = state.and_then(|s| s.paused_at);
                PeriodicStatus {
                    name: p.name.clone(),
                    schedule: p.schedule.to_string(),
                    catch_up: self.policy(p),
                    last_tick: state.map(|s| s.last_tick),
                    next_run: if paused_at.is_some() {
                        None
                    } else {
                        p.schedule.next_after(now)
                    },
                    paused_at,
                    paused_by: state.and_then(|s| s.paused_by.clone()),
                }
            })
            .collect())
    }
}

/// The jobs of `periodic` for `ticks`, with their unique keys and run times.
fn build(periodic: &Periodic, ticks: &[DateTime<Utc>]) -> Result<Vec<NewJob>> {
    let mut all = Vec::new();
    for tick in ticks {
        let jobs = (periodic.make)(*tick)?;
        let several = jobs.len() > 1;
        let at = tick.to_rfc3339_opts(SecondsFormat::Micros, true);
        for (i, mut job) in jobs.into_iter().enumerate() {
            if job.unique_key.is_none() {
                job.unique_key = Some(if several {
                    format!("periodic:{}:{at}:{i}", periodic.name)
                } else {
                    format!("periodic:{}:{at}", periodic.name)
                });
            }
            job.run_at.get_or_insert(*tick);
            all.push(job);
        }
    }
    Ok(all)
}
