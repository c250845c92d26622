//! The sampler: on every tick, the lease holder reads the database-wide gauges (queues,
//! outboxes, webhook endpoints, lock waits), and every instance reads its own pool, caches
//! and endpoint breakers (those live in each process).

use crate::lease::Lease;
use crate::metric_names::{LEADER, SAMPLE_SECONDS, SAMPLES_TOTAL};
use crate::queries::{
    self, EndpointReading, LockReading, OutboxReading, QueueReading, WebhookReading,
};
use crate::{ObserveConfig, Result};
use neo_cache::metric_names as cache;
use neo_db::metric_names as db;
use neo_db::{Db, MigrationReport, MigrationSet, Schema, TableName};
use neo_events::metric_names as events;
use neo_queue::metric_names as queue;
use neo_resilience::BreakerState;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type CacheProbe = Box<dyn Fn() -> CacheReading + Send + Sync>;
type BreakerProbe = Box<dyn Fn() -> Vec<BreakerState> + Send + Sync>;

/// One cache's counters as sampled.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheReading {
    /// The cache's name (its `cache` label).
    pub cache: String,
    /// Entries in L1.
    pub l1_entries: u64,
    /// Hits (L1 or L2) over lookups since the cache was built (1 before any lookup).
    pub hit_ratio: f64,
}

/// What one call to [`Sampler::sample`] read.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Sample {
    /// Whether this instance held the lease and so read the database-wide gauges.
    pub leader: bool,
    /// Per queue schema (empty unless leader).
    pub queues: Vec<QueueReading>,
    /// Per outbox schema (empty unless leader).
    pub outboxes: Vec<OutboxReading>,
    /// Per webhook schema (empty unless leader).
    pub webhooks: Vec<WebhookReading>,
    /// Lock waits (`None` unless leader).
    pub locks: Option<LockReading>,
    /// This instance's caches.
    pub caches: Vec<CacheReading>,
}

/// The background sampler. Build it with [`Sampler::new`], register this instance's caches
/// and webhook breakers, run [`migrate`](Self::migrate) once, then [`spawn`](Self::spawn).
pub struct Sampler {
    db: Db,
    config: ObserveConfig,
    lease: Lease,
    caches: Vec<CacheProbe>,
    breakers: Vec<BreakerProbe>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("config", &self.config)
            .field("holder", &self.lease.holder())
            .field("caches", &self.caches.len())
            .field("breaker_sources", &self.breakers.len())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler reading through `db`; `instance` names this process in the lease (made
    /// unique with a random suffix).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for invalid settings.
    pub fn new(db: &Db, config: ObserveConfig, instance: &str) -> Result<Self> {
        config.validate()?;
        let table = TableName::parse(&format!("{}.sampler_leases", config.schema))?;
        let holder = format!("{instance}-{}", uuid::Uuid::now_v7().simple());
        let lease = Lease::new(db, table, &config.lease_name, holder, config.lease_ttl);
        Ok(Sampler {
            db: db.clone(),
            config,
            lease,
            caches: Vec::new(),
            breakers: Vec::new(),
        })
    }

    /// The sampler's own migrations (the lease table).
    ///
    /// # Errors
    /// A bad migration set (never, for the one shipped).
    pub fn migrations() -> Result<MigrationSet> {
        Ok(MigrationSet::new("neo_observe")?.with(
            1,
            "sampler_leases",
            include_str!("../migrations/1_sampler_leases.sql"),
        ))
    }

    /// Creates the lease table in `config.schema`.
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        let schema = Schema::new(&self.config.schema)?;
        Ok(Self::migrations()?.run_in_schema(&self.db, &schema).await?)
    }

    /// Samples `cache` on every tick (L1 entries and hit ratio under its name).
    pub fn with_cache<V>(mut self, cache: neo_cache::HybridCache<V>) -> Self
    where
        V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        use neo_cache::Cache as _;
        self.caches.push(Box::new(move || {
            let stats = cache.stats();
            let hits = stats.l1_hits + stats.l2_hits;
            // A lookup that misses L1 is a hit or a miss of L2 (or a miss when there is
            // no L2), so lookups = L1 hits + L1 misses.
            let lookups = stats.l1_hits + stats.l1_misses;
            CacheReading {
                cache: cache.config().name.clone(),
                l1_entries: cache.l1_entries(),
                hit_ratio: if lookups == 0 {
                    1.0
                } else {
                    (hits as f64 / lookups as f64).min(1.0)
                },
            }
        }));
        self
    }

    /// Samples the endpoint breakers of this instance's webhook deliveries.
    pub fn with_webhooks(mut self, webhooks: neo_events::Webhooks) -> Self {
        self.breakers.push(Box::new(move || {
            webhooks
                .breaker_states()
                .into_iter()
                .map(|(_, state)| state)
                .collect()
        }));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }

    /// Takes one sample now: the local gauges always, the database-wide ones when this
    /// instance holds (or wins) the lease. Sets the gauges and returns what it read.
    ///
    /// # Errors
    /// A database error of the lease or of a sampling statement (the local gauges are set
    /// before any database call).
    pub async fn sample(&self) -> Result<Sample> {
        let started = Instant::now();
        let mut sample = Sample {
            caches: self.sample_local(),
            ..Sample::default()
        };
        metrics::histogram!(SAMPLE_SECONDS, "scope" => "local")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(SAMPLES_TOTAL, "scope" => "local", "outcome" => "ok").increment(1);
        let leader = match self.lease.try_hold().await {
            Ok(leader) => leader,
            Err(e) => {
                metrics::gauge!(LEADER).set(0.0);
                metrics::counter!(SAMPLES_TOTAL, "scope" => "leader", "outcome" => "error")
                    .increment(1);
                return Err(e);
            }
        };
        metrics::gauge!(LEADER).set(if leader { 1.0 } else { 0.0 });
        if !leader {
            return Ok(sample);
        }
        sample.leader = true;
        let started = Instant::now();
        let result = self.sample_database(&mut sample).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(SAMPLES_TOTAL, "scope" => "leader", "outcome" => outcome).increment(1);
        metrics::histogram!(SAMPLE_SECONDS, "scope" => "leader")
            .record(started.elapsed().as_secs_f64());
        result.map(|()| sample)
    }

    fn sample_local(&self) -> Vec<CacheReading> {
        // Pool gauges (in use, idle, max) are set by `Db::stats`.
        let _ = self.db.stats();
        let readings: Vec<CacheReading> = self.caches.iter().map(|probe| probe()).collect();
        for r in &readings {
            metrics::gauge!(cache::L1_ENTRIES, "cache" => r.cache.clone()).set(r.l1_entries as f64);
            metrics::gauge!(cache::HIT_RATIO, "cache" => r.cache.clone()).set(r.hit_ratio);
        }
        if !self.breakers.is_empty() {
            let (mut closed, mut open, mut half_open) = (0u64, 0u64, 0u64);
            for state in self.breakers.iter().flat_map(|probe| probe()) {
                match state {
                    BreakerState::Closed => closed += 1,
                    BreakerState::Open => open += 1,
                    BreakerState::HalfOpen => half_open += 1,
                }
            }
            for (state, n) in [("closed", closed), ("open", open), ("half_open", half_open)] {
                metrics::gauge!(events::WEBHOOK_BREAKERS, "state" => state).set(n as f64);
            }
        }
        readings
    }

    async fn sample_database(&self, sample: &mut Sample) -> Result<()> {
        let config = &self.config;
        let mut uow = self.db.begin().await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .persistent(false)
            .bind(format!("{}ms", config.statement_timeout.as_millis().max(1)))
            .execute(&mut **uow)
            .await?;
        for schema in &config.queue_schemas {
            let r = queries::queue(&mut uow, schema, config.count_cap).await?;
            for (state, n) in [
                ("available", r.available),
                ("running", r.running),
                ("dead", r.dead),
            ] {
                metrics::gauge!(queue::DEPTH_JOBS, "queue" => r.queue.clone(), "state" => state)
                    .set(n as f64);
            }
            metrics::gauge!(queue::OLDEST_PENDING_SECONDS, "queue" => r.queue.clone())
                .set(r.oldest_pending_seconds);
            sample.queues.push(r);
        }
        for schema in &config.outbox_schemas {
            let r = queries::outbox(&mut uow, schema, config.count_cap).await?;
            metrics::gauge!(events::OUTBOX_PENDING_EVENTS, "outbox" => r.outbox.clone())
                .set(r.pending as f64);
            metrics::gauge!(events::OUTBOX_LAG_SECONDS, "outbox" => r.outbox.clone())
                .set(r.lag_seconds);
            sample.outboxes.push(r);
        }
        for schema in &config.webhook_schemas {
            let r = queries::webhooks(&mut uow, schema, config).await?;
            for e in &r.endpoints {
                set_endpoint(e);
            }
            metrics::gauge!(events::WEBHOOK_DISABLED_ENDPOINTS).set(r.disabled as f64);
            metrics::gauge!(events::WEBHOOK_DEAD_DELIVERIES).set(r.dead as f64);
            sample.webhooks.push(r);
        }
        let locks = queries::locks(&mut uow).await?;
        metrics::gauge!(db::LOCK_WAITS_SESSIONS).set(locks.waiting as f64);
        metrics::gauge!(db::LOCK_WAIT_LONGEST_SECONDS).set(locks.longest_seconds);
        sample.locks = Some(locks);
        uow.commit().await?;
        Ok(())
    }

    /// Runs [`sample`](Self::sample) every `interval` until the handle is stopped; errors are
    /// logged and counted, and the next tick tries again.
    pub fn spawn(self) -> SamplerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let sampler = Arc::new(self);
        let task = {
            let sampler = Arc::clone(&sampler);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(sampler.config.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(e) = sampler.sample().await {
                                tracing::warn!(error = %e, "metrics sample failed");
                            }
                        }
                        _ = stopped.changed() => break,
                    }
                }
                if let Err(e) = sampler.lease.release().await {
                    tracing::warn!(error = %e, "could not release the sampling lease");
                }
                metrics::gauge!(LEADER).set(0.0);
            })
        };
        SamplerHandle { stop, task }
    }
}

fn set_endpoint(e: &EndpointReading) {
    let label = e.endpoint.clone();
    metrics::gauge!(events::WEBHOOK_ENDPOINT_SUCCESS_RATIO, "endpoint" => label.clone())
        .set(e.success_ratio);
    metrics::gauge!(events::WEBHOOK_ENDPOINT_LATENCY_SECONDS, "endpoint" => label.clone())
        .set(e.latency_seconds);
    metrics::gauge!(events::WEBHOOK_ENDPOINT_PENDING_DELIVERIES, "endpoint" => label)
        .set(e.pending as f64);
}

/// Stops a spawned sampler.
#[derive(Debug)]
pub struct SamplerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SamplerHandle {
    /// Stops sampling and gives the lease up (another instance takes over at its next tick).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
