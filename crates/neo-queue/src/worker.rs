//! The worker pool: claims jobs, runs a handler per kind with bounded concurrency, and
//! acknowledges in batches.

use crate::buffer::Buffer;
use crate::context::{Cancels, JobContext};
use crate::queue::{CANCEL_NOTICE, Queue, TENANT_NOTICE, channel, lease};
use crate::riding::{Riding, RidingAcks};
use crate::{Failure, Job, Receipt};
use crate::{Result, WorkerConfig};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// Why a job failed, as its handler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// Try again later (with backoff), until the attempts run out.
    Retry(String),
    /// Try again after this long (a `Retry-After`, the handler's own schedule), until the
    /// attempts run out.
    RetryIn(String, Duration),
    /// Never retry (bad payload, impossible request): straight to the dead letters.
    Permanent(String),
    /// Not a failure: run the job again after this long without spending the attempt (a rate
    /// limit, an open circuit breaker).
    Snooze(Duration),
}

impl JobError {
    /// A retryable failure from any displayable error.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        JobError::Retry(error.to_string())
    }

    /// A permanent failure from any displayable error.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        JobError::Permanent(error.to_string())
    }

    /// A retryable failure, retried after `after` instead of the queue's backoff.
    pub fn retry_in(error: impl std::fmt::Display, after: Duration) -> Self {
        JobError::RetryIn(error.to_string(), after)
    }

    /// What the queue records for this outcome of the claim `receipt`.
    fn into_failure(self, receipt: Receipt) -> Failure {
        match self {
            JobError::Retry(error) => Failure::retry(receipt, error),
            JobError::RetryIn(error, after) => Failure::retry(receipt, error).retry_in(after),
            JobError::Permanent(error) => Failure::permanent(receipt, error),
            JobError::Snooze(after) => Failure::snooze(receipt, after),
        }
    }
}

/// A finished job: its claim, its outcome and when it was claimed.
type Outcome = (Receipt, Result<(), JobError>, Instant);

/// What a finished job tells the completer: its outcome to write, or that its ack waits for
/// the next claim among the [`RidingAcks`].
enum Done {
    Outcome(Outcome),
    Riding,
}

type Handler =
    Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> + Send + Sync>;

/// What a [`Worker::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs whose handler succeeded and whose ack was accepted.
    pub succeeded: u64,
    /// Jobs reported failed (retried later or dead-lettered) or snoozed.
    pub failed: u64,
    /// Acks or nacks refused because the lease was lost.
    pub lease_lost: u64,
    /// Jobs handed back unfinished (or unstarted from the local buffer) at shutdown.
    pub released: u64,
    /// Buffered jobs dropped unstarted because their lease had run out (heartbeats failed or
    /// were refused); the queue rescues them once the lease expires.
    pub expired_before_start: u64,
}

/// Runs jobs from a [`Queue`] with one handler per job kind.
///
/// # Example
/// ```no_run
/// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
/// use neo_queue::{JobError, Worker, WorkerConfig};
/// let worker = Worker::new(queue, WorkerConfig::default()).handle("email.send", |job| async move {
///     let to: String = serde_json::from_value(job.payload).map_err(JobError::permanent)?;
///     // send the email to `to` ...
///     # let _ = to;
///     Ok(())
/// });
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// let report = worker.run(async { let _ = stopped.await; }).await?;
/// # let _ = report; Ok(()) }
/// ```
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    handlers: HashMap<String, Handler>,
    periodic: Option<crate::PeriodicJobs>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

static WORKERS: AtomicU64 = AtomicU64::new(0);

/// Aborts its task when dropped, so a worker whose `run` future is dropped (its process part
/// going away) stops heartbeating and stops its handlers: its leases then expire as they must.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// A worker with no handlers yet.
    pub fn new(queue: Queue, mut config: WorkerConfig) -> Self {
        config.concurrency = config.concurrency.max(1);
        config.claim_batch = config.claim_batch.max(1);
        config.complete_batch = config.complete_batch.max(1);
        config.name = format!(
            "{}:{}:{}",
            config.name,
            std::process::id(),
            WORKERS.fetch_add(1, Ordering::Relaxed)
        );
        Worker {
            queue,
            config,
            handlers: HashMap::new(),
            periodic: None,
        }
    }

    /// Runs the scheduler of `periodic` beside this worker ([`PeriodicJobs::run`](crate::PeriodicJobs::run)),
    /// from [`run`](Self::run) until it returns. Any number of workers may run the same
    /// periodic jobs: each tick is enqueued once.
    #[must_use]
    pub fn periodic(mut self, periodic: crate::PeriodicJobs) -> Self {
        self.periodic = Some(periodic);
        self
    }

    /// Runs `handler` for jobs of `kind`.
    #[must_use]
    pub fn handle<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_owned(), Arc::new(move |job| Box::pin(handler(job))));
        self
    }

    /// How many jobs this worker runs at once.
    pub fn concurrency(&self) -> usize {
        self.config.concurrency
    }

    /// Whether it claims only the kinds it has handlers for
    /// ([`WorkerConfig::only_known_kinds`]).
    pub fn claims_only_known_kinds(&self) -> bool {
        self.config.only_known_kinds
    }

    /// The name this worker claims under.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Claims and runs jobs until `shutdown` completes, then stops claiming, hands back the
    /// jobs it holds unstarted, waits up to `shutdown_grace` for running jobs and hands back
    /// the rest.
    ///
    /// A claim runs beside the jobs: meanwhile, slots that free start jobs
    /// from the local buffer ([`WorkerConfig::prefetch`]). A claim is sent when the worker will
    /// have room for at least half of what it may hold by the time the claim comes back
    /// (counting the held jobs that its slots finish meanwhile, at the measured pace), and asks
    /// for that room, so that short jobs are claimed in full batches back to back; or at once
    /// when a slot is free and nothing is buffered or being claimed. After a claim that came
    /// back short, only a notification or the poll interval sends the next.
    ///
    /// # Errors
    /// A database error that prevents listening; errors of single claims or acks are logged
    /// and retried on the next round.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<WorkerReport> {
        let Worker {
            queue,
            config,
            handlers,
            periodic,
        } = self;
        // The periodic scheduler, stopped when `run` returns (a round's statement is atomic).
        let _periodic = periodic.map(|p| AbortOnDrop(tokio::spawn(p.run(std::future::pending()))));
        let kinds: Arc<[String]> = handlers.keys().cloned().collect();
        let handlers = Arc::new(handlers);
        // None behind a transaction pooler without a listen_url: poll only (neo_db::Pooler).
        let mut listener = queue.system_db().listener().await?;
        if let Some(listener) = listener.as_mut() {
            listener.listen(channel(&queue)).await?;
        }

        let slots = Arc::new(Semaphore::new(config.concurrency));
        let held: Held = Arc::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        // Acks ride on the next claim unless the wait for one is zero.
        let riding = (!config.ack_ride_wait.is_zero()).then(|| Arc::new(RidingAcks::default()));
        let mut completer = AbortOnDrop(tokio::spawn(complete(
            queue.clone(),
            config.clone(),
            Arc::clone(&held),
            riding.clone(),
            done_rx,
        )));
        // Running jobs' cancellation tokens; a cancel notification sends a heartbeat at once,
        // whose refusals fire them.
        let cancels = Cancels::default();
        let beat_now = Arc::new(tokio::sync::Notify::new());
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            queue.clone(),
            Arc::clone(&held),
            cancels.clone(),
            Arc::clone(&beat_now),
        )));
        // Expired leases are rescued and finished jobs pruned before the first claim; after
        // that beside the claims, so that a slow round never holds up a claim or a start. A
        // rescue that freed jobs wakes the loop to claim them.
        let next_prune = maintenance_round(&queue, tokio::time::Instant::now())
            .await
            .1;
        let rescued = Arc::new(tokio::sync::Notify::new());
        let _maintenance = AbortOnDrop(tokio::spawn(maintain(
            queue.clone(),
            config.poll_interval,
            next_prune,
            Arc::clone(&rescued),
        )));
        // Acks written with claims: counted here, added to the completer's report.
        let mut rode = WorkerReport::default();
        // The acks each claim in flight took, by its task.
        let mut claim_acks: HashMap<tokio::task::Id, Vec<Riding>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // Claimed jobs not yet started, with the time they were claimed.
        let mut buffer = Buffer::new(queue.claims_take_turns());
        // Claims in flight (at most `CLAIMS_IN_FLIGHT`, and an express claim), and the jobs
        // they asked for.
        let mut claims: JoinSet<Claimed> = JoinSet::new();
        // The jobs each claim in flight asked for, by its task.
        let mut asked_by: HashMap<tokio::task::Id, usize> = HashMap::new();
        // Express claims ([`WorkerConfig::express_claim`]): whether this queue's claims allow
        // them, whether a job was enqueued while a claim was in flight, and the one in flight.
        let express =
            config.express_claim > 0 && queue.claims_take_turns() && !queue.claims_serialised();
        let mut express_wanted = Express::default();
        let mut express_task: Option<tokio::task::Id> = None;
        // Wake-ups (notifications, polls) so far: a short claim sent before the last one does
        // not mean the queue is empty.
        let mut wakes = 0_u64;
        // The queue may have due jobs: false after a short claim until a notification or
        // the poll interval says otherwise.
        let mut more = true;
        let mut expired_before_start = 0_u64;
        let pace = Arc::new(Pace::default());
        // A buffered job is started only while its lease has this long left.
        let margin = lease(&queue) / 4;

        loop {
            while !buffer.is_empty() {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    break;
                };
                let Some((job, claimed_at)) = buffer.pop() else {
                    break;
                };
                let receipt = job.receipt();
                if !leased_for(&held, receipt, margin) {
                    // Its lease ran out in the buffer (heartbeats failed or were refused):
                    // not run under a claim that may be another worker's by now.
                    lock(&held).remove(&receipt);
                    expired_before_start += 1;
                    continue;
                }
                let handler = handlers.get(&job.kind).cloned();
                let pace = Arc::clone(&pace);
                let context = (cancels.context(&queue, receipt), cancels.clone());
                tasks.spawn(run_job(
                    job,
                    context,
                    claimed_at,
                    handler,
                    slot,
                    (done_tx.clone(), riding.clone()),
                    pace,
                ));
            }
            // Jobs held beyond the slots: only as many as the slots start within about two
            // claims' time, so that slow jobs are not held back from other workers and other
            // tenants' jobs do not queue behind a buffer of them.
            // A rate-limited queue's claims count as starts: none are held in a buffer, so
            // that a job starts when it is claimed ([`QueueConfig::rate_limit`]).
            let prefetch = if queue.config().rate_limit.is_some() {
                0
            } else {
                config.prefetch
            };
            let ahead = pace.ahead(config.concurrency, prefetch);
            let most = config.concurrency + ahead;
            let worth_a_claim = (ahead / 2).max(1);
            while more && claims.len() - usize::from(express_task.is_some()) < CLAIMS_IN_FLIGHT {
                let claiming: usize = asked_by.values().sum();
                let free = slots.available_permits();
                let held_now = buffer.len() + (config.concurrency - free);
                let room = most.saturating_sub(held_now + claiming);
                // What the claim finds room for when it comes back: the jobs held now that
                // finish meanwhile will have freed theirs. Counted only with a buffer: a
                // worker that may not hold jobs ahead claims for free slots alone.
                let finishing = if ahead > 0 {
                    pace.finishing(config.concurrency, held_now)
                } else {
                    0
                };
                let room_then = most.saturating_sub(held_now - finishing + claiming);
                let idle = free > 0 && buffer.is_empty() && claims.is_empty();
                if room_then < worth_a_claim && !(room > 0 && idle) {
                    break;
                }
                let asked = room_then.min(config.claim_batch);
                let acks = riding.as_ref().map(|r| r.take()).unwrap_or_default();
                let of = ClaimOf::Any(crate::riding::receipts(&acks));
                let task = send_claim(&mut claims, &queue, &config, &kinds, asked, of, wakes);
                claim_acks.insert(task, acks);
                asked_by.insert(task, asked);
                // Sent after the notification by a worker with nothing to do: it finds the
                // new job itself as soon as an express claim would.
                if idle {
                    express_wanted = Express::default();
                }
            }
            // A job enqueued while no claim sent since can take it (one in flight, or none
            // because the buffer is full), on a queue whose claims take turns across tenants:
            // a small claim now takes it (another tenant's job is chosen first, and starts
            // first from the buffer), rather than the claim after those. It takes at most one
            // express claim's jobs beyond what the worker may hold, and none beyond its free
            // slots where it may hold none ahead (slow jobs, `prefetch` 0), so that busy slots
            // do not gather a buffer one notification at a time.
            let held_now = buffer.len() + (config.concurrency - slots.available_permits());
            let beyond = if ahead > 0 { config.express_claim } else { 0 };
            let express_room = (most + beyond).saturating_sub(held_now);
            if express_wanted.is_wanted() && express_task.is_none() && express_room > 0 {
                let asked = config.express_claim.min(express_room);
                let wanted = std::mem::take(&mut express_wanted);
                let of = match wanted {
                    Express::Tenants(tenants) => ClaimOf::Tenants(tenants),
                    _ => ClaimOf::Any(Vec::new()),
                };
                let task = send_claim(&mut claims, &queue, &config, &kinds, asked, of, wakes);
                asked_by.insert(task, asked);
                express_task = Some(task);
            }
            if let Some(riding) = &riding {
                riding.set_claim_coming(more || !claims.is_empty());
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(claimed) = claims.join_next_with_id(), if !claims.is_empty() => {
                    let id = claimed.as_ref().map_or_else(tokio::task::JoinError::id, |(id, _)| *id);
                    asked_by.remove(&id);
                    let was_express = express_task == Some(id);
                    if was_express {
                        express_task = None;
                    }
                    let written = settle_acks(&claimed, &mut claim_acks, &held, &mut rode);
                    if let (Some(acks), Some(riding)) = (written, &riding) {
                        riding.put_back(acks);
                        let _ = done_tx.send(Done::Riding);
                    }
                    match claimed.map(|(_, claimed)| claimed) {
                        Ok(Claimed { asked, sent, epoch, jobs: Ok((jobs, _)) }) => {
                            // An express claim is small and comes back short by design (the
                            // claim in flight holds the busy tenant's next jobs): it neither
                            // paces the claims nor says the queue is empty.
                            if !was_express {
                                pace.claimed(sent.elapsed());
                                // Short: none left when it ran, unless a wake-up came since.
                                if jobs.len() < asked && epoch == wakes {
                                    more = false;
                                }
                            }
                            supersede(&held, &cancels, &jobs);
                            let at = hold(&held, &jobs, lease(&queue), sent);
                            buffer.extend(jobs, at);
                        }
                        Ok(Claimed { jobs: Err(error), .. }) => {
                            tracing::warn!(%error, "claiming jobs failed; retrying");
                            more = false;
                        }
                        Err(error) => {
                            // Its task panicked; what it asked for is no longer coming.
                            tracing::warn!(%error, "a claim's task failed; retrying");
                            more = false;
                        }
                    }
                }
                notified = notification(listener.as_mut()) => {
                    if notified.as_ref().is_ok_and(|n| n.payload() == CANCEL_NOTICE) {
                        beat_now.notify_one();
                    } else if let (true, Ok(notice)) = (express, &notified) {
                        express_wanted.add(notice.payload(), config.express_claim);
                    }
                    more = true;
                    wakes += 1;
                    if notified.is_err() {
                        // The listener reconnects on its next call; do not spin meanwhile.
                        tokio::time::sleep(config.poll_interval.min(Duration::from_secs(1))).await;
                    }
                }
                // After the notifications: with many short jobs one finishes at almost every
                // turn, and a notification (another tenant's job, for an express claim) would
                // wait behind them.
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                () = rescued.notified() => {
                    more = true;
                    wakes += 1;
                }
                () = tokio::time::sleep(config.poll_interval) => {
                    more = true;
                    wakes += 1;
                }
            }
        }

        // Shutdown: no new claims; what is buffered goes back at once, running jobs get the
        // grace period.
        if let Some(riding) = &riding {
            riding.set_claim_coming(false);
        }
        while let Some(claimed) = claims.join_next_with_id().await {
            let written = settle_acks(&claimed, &mut claim_acks, &held, &mut rode);
            if let (Some(acks), Some(riding)) = (written, &riding) {
                riding.put_back(acks);
                let _ = done_tx.send(Done::Riding);
            }
            if let Ok((
                _,
                Claimed {
                    sent,
                    jobs: Ok((jobs, _)),
                    ..
                },
            )) = claimed
            {
                supersede(&held, &cancels, &jobs);
                let at = hold(&held, &jobs, lease(&queue), sent);
                buffer.extend(jobs, at);
            }
        }
        let mut released = 0;
        released += hand_back(&queue, &held, buffer.drain()).await;
        let grace = tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        let mut report = (&mut completer.0).await.unwrap_or_default();
        report.succeeded += rode.succeeded;
        report.lease_lost += rode.lease_lost;
        let unfinished: Vec<Receipt> = lock(&held).keys().copied().collect();
        released += hand_back(&queue, &held, unfinished).await;
        report.released = released;
        report.expired_before_start = expired_before_start;
        Ok(report)
    }
}

/// The jobs a worker holds (buffered, running or awaiting their ack), each with the time its
/// lease is known to last until: set at the claim and moved on by each accepted heartbeat.
type Held = Arc<Mutex<HashMap<Receipt, Instant>>>;

/// Records `jobs`, whose claim was sent at `sent`, as held under a lease of `lease`; returns
/// when they arrived.
fn hold(held: &Held, jobs: &[Job], lease: Duration, sent: Instant) -> Instant {
    let mut held = lock(held);
    for job in jobs {
        held.insert(job.receipt(), sent + lease);
    }
    Instant::now()
}

/// Stops holding the older claims of `jobs` that this worker still holds: a job rescued
/// after its lease was lost and claimed again by this same worker (a new fencing token). A
/// buffered one is then dropped unstarted, as any buffered job whose lease was lost; a
/// running one's cancellation token fires, as a refused heartbeat fires it. The worker
/// never holds two claims of one job, so that a receipt answered by job id (heartbeats,
/// acks) stands for one claim.
fn supersede(held: &Held, cancels: &Cancels, jobs: &[Job]) {
    let claimed: HashMap<neo_core::JobId, i64> = jobs.iter().map(|j| (j.id, j.fence)).collect();
    let mut lost = Vec::new();
    lock(held).retain(|receipt, _| {
        let older = claimed
            .get(&receipt.id)
            .is_some_and(|fence| *fence != receipt.fence);
        if older {
            lost.push(receipt.id);
        }
        !older
    });
    if !lost.is_empty() {
        tracing::warn!(
            lost = lost.len(),
            "claimed again jobs whose earlier claims were lost"
        );
        // The new claims are not running yet: only the lost claims' tokens fire.
        cancels.cancel(lost);
    }
}

/// Whether the claim `receipt` is known to be leased for at least `margin` more.
fn leased_for(held: &Held, receipt: Receipt, margin: Duration) -> bool {
    lock(held)
        .get(&receipt)
        .is_some_and(|until| until.saturating_duration_since(Instant::now()) > margin)
}

/// Hands `receipts` back to the queue and stops holding them; how many were taken back.
async fn hand_back(queue: &Queue, held: &Held, receipts: Vec<Receipt>) -> u64 {
    if receipts.is_empty() {
        return 0;
    }
    {
        let mut held = lock(held);
        for receipt in &receipts {
            held.remove(receipt);
        }
    }
    match queue.release(&receipts).await {
        Ok(refused) => (receipts.len() - refused.len()) as u64,
        Err(error) => {
            tracing::warn!(%error, "handing back unfinished jobs failed; their leases will expire");
            0
        }
    }
}

/// Claims a worker keeps in flight at once. One: two concurrent fair claims of one worker
/// choose the same candidates, the second skips them all (SKIP LOCKED) and comes back short,
/// which stops claiming until the next poll (measured: 173 jobs/s in a drain).
const CLAIMS_IN_FLIGHT: usize = 1;

/// What a claim takes: any due jobs, carrying the receipts of acks; or the listed tenants'
/// jobs alone (an express claim, [`Queue::claim_for_tenants`]).
enum ClaimOf {
    Any(Vec<Receipt>),
    Tenants(Vec<String>),
}

/// Sends a claim of `asked` jobs (wake-ups so far: `wakes`) as a task of `claims`; returns
/// the task's id.
fn send_claim(
    claims: &mut JoinSet<Claimed>,
    queue: &Queue,
    config: &WorkerConfig,
    kinds: &Arc<[String]>,
    asked: usize,
    of: ClaimOf,
    wakes: u64,
) -> tokio::task::Id {
    let (queue, name, kinds) = (queue.clone(), config.name.clone(), Arc::clone(kinds));
    let only = config.only_known_kinds;
    claims
        .spawn(async move {
            let sent = Instant::now();
            let only = only.then_some(&kinds[..]);
            let jobs = match &of {
                ClaimOf::Any(receipts) => queue.ack_and_claim(receipts, &name, asked, only).await,
                ClaimOf::Tenants(tenants) => queue
                    .claim_for_tenants(&name, asked, only, tenants)
                    .await
                    .map(|jobs| (jobs, Vec::new())),
            };
            Claimed {
                asked,
                sent,
                epoch: wakes,
                jobs,
            }
        })
        .id()
}

/// What the notifications since the last express claim ask of the next one
/// ([`WorkerConfig::express_claim`]): nothing, the tenants they named, or any jobs once one
/// named none (jobs without a tenant, of several tenants, requeued) or more tenants than one
/// express claim takes.
#[derive(Debug, Default, PartialEq)]
enum Express {
    #[default]
    Unwanted,
    Tenants(Vec<String>),
    Any,
}

impl Express {
    /// Adds a notification's `payload`; at most `most` tenants are listed.
    fn add(&mut self, payload: &str, most: usize) {
        let tenant = payload.strip_prefix(TENANT_NOTICE);
        match (&mut *self, tenant) {
            (Express::Any, _) => {}
            (Express::Unwanted, Some(tenant)) if most > 0 => {
                *self = Express::Tenants(vec![tenant.to_owned()]);
            }
            (Express::Tenants(listed), Some(tenant)) if listed.iter().any(|t| t == tenant) => {}
            (Express::Tenants(listed), Some(tenant)) if listed.len() < most => {
                listed.push(tenant.to_owned());
            }
            _ => *self = Express::Any,
        }
    }

    /// Whether an express claim is wanted.
    fn is_wanted(&self) -> bool {
        *self != Express::Unwanted
    }
}

/// What a claim's task returns: how many jobs it asked for, when it was sent, the wake-ups
/// counted when it was sent, the jobs and the acks it carried that were refused (lease lost).
struct Claimed {
    asked: usize,
    sent: Instant,
    epoch: u64,
    jobs: Result<(Vec<Job>, Vec<Receipt>)>,
}

/// Settles the acks a finished claim carried: when it committed, counts them into `rode`
/// (refused ones as lease lost), records their claim-to-complete latency and stops holding
/// them; when it failed (or its task did), returns them to be written again.
fn settle_acks(
    claimed: &std::result::Result<(tokio::task::Id, Claimed), tokio::task::JoinError>,
    claim_acks: &mut HashMap<tokio::task::Id, Vec<Riding>>,
    held: &Held,
    rode: &mut WorkerReport,
) -> Option<Vec<Riding>> {
    let id = match claimed {
        Ok((id, _)) => *id,
        Err(error) => error.id(),
    };
    let acks = claim_acks.remove(&id).filter(|acks| !acks.is_empty())?;
    let Ok((
        _,
        Claimed {
            jobs: Ok((_, refused)),
            ..
        },
    )) = claimed
    else {
        return Some(acks);
    };
    rode.succeeded += (acks.len() - refused.len()) as u64;
    rode.lease_lost += refused.len() as u64;
    let latency = metrics::histogram!(crate::metric_names::CLAIM_TO_COMPLETE_SECONDS);
    let mut held = lock(held);
    for ack in &acks {
        latency.record(ack.claimed_at.elapsed().as_secs_f64());
        held.remove(&ack.receipt);
    }
    None
}

/// Runs one job on its slot and reports its outcome to the completer: the handler inside a
/// `neo_queue.job` span with the job's `tenant`, and inside `neo_tenant::scope` of the job's
/// tenant when it is a tenant id.
async fn run_job(
    job: Job,
    (context, cancels): (JobContext, Cancels),
    claimed_at: Instant,
    handler: Option<Handler>,
    slot: OwnedSemaphorePermit,
    (done, riding): (mpsc::UnboundedSender<Done>, Option<Arc<RidingAcks>>),
    pace: Arc<Pace>,
) {
    let _slot = slot;
    let receipt = job.receipt();
    let started = Instant::now();
    let span = run_span(&job);
    // The handler runs as its tenant: the stores it calls act for it (neo_tenant::current).
    let tenant = job.tenant_id().ok().flatten();
    let outcome = match handler {
        Some(handler) => {
            let kind = job.kind.clone();
            let run = context.scope(span.in_scope(|| handler(job)).instrument(span));
            // Its own task, so a panic is caught; aborted with this one.
            let mut handle = AbortOnDrop(match tenant {
                Some(tenant) => tokio::spawn(neo_tenant::scope(tenant, run)),
                None => tokio::spawn(run),
            });
            match (&mut handle.0).await {
                Ok(outcome) => outcome,
                Err(panic) => Err(JobError::Retry(format!(
                    "the {kind} handler panicked: {panic}"
                ))),
            }
        }
        None => Err(JobError::Permanent(format!(
            "no handler for job kind {:?}",
            job.kind
        ))),
    };
    pace.ran(started.elapsed());
    cancels.finished(receipt);
    // Before the slot frees: the claim that the free slot sends takes this ack along.
    let done_now = match (outcome, riding) {
        (Ok(()), Some(riding)) => {
            riding.push(receipt, claimed_at);
            Done::Riding
        }
        (outcome, _) => Done::Outcome((receipt, outcome, claimed_at)),
    };
    let _ = done.send(done_now);
}

/// The span a job runs in: `neo_queue.job`, linked to the trace context the job carries
/// (recorded as `link.traceparent`, and a span link through the installed
/// [`TracePropagation`](neo_core::trace::TracePropagation)).
fn run_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "neo_queue.job",
        kind = %job.kind,
        job = %job.id,
        attempt = job.attempt,
        tenant = tracing::field::Empty,
        link.traceparent = tracing::field::Empty,
    );
    if let Some(tenant) = job.tenant.as_deref() {
        span.record("tenant", tenant);
    }
    // Linked only when the span exists: inside a disabled one, the link would land on
    // whatever span is current.
    if !span.is_disabled()
        && let Some(context) = &job.trace_context
    {
        span.record("link.traceparent", tracing::field::display(context));
        span.in_scope(|| neo_core::trace::link_current(context));
    }
    span
}

/// Moving averages of how long a job runs and how long a claim takes, in nanoseconds (0
/// until measured); updated without locks, a lost update costs nothing.
#[derive(Debug, Default)]
struct Pace {
    run_ns: AtomicU64,
    claim_ns: AtomicU64,
}

impl Pace {
    fn ran(&self, took: Duration) {
        Self::update(&self.run_ns, took);
    }

    fn claimed(&self, took: Duration) {
        Self::update(&self.claim_ns, took);
    }

    fn update(average: &AtomicU64, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = average.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        average.store(new.max(1), Ordering::Relaxed);
    }

    /// Jobs to hold beyond `concurrency` slots: what they start within two claims' time,
    /// at most `prefetch`; none until a job and a claim have been timed.
    fn ahead(&self, concurrency: usize, prefetch: usize) -> usize {
        if prefetch == 0 {
            return 0;
        }
        self.run_within_claims(concurrency, 2).min(prefetch)
    }

    /// Of the `held` jobs (buffered and running), how many `concurrency` slots finish within
    /// one claim's time; none until a job and a claim have been timed.
    fn finishing(&self, concurrency: usize, held: usize) -> usize {
        self.run_within_claims(concurrency, 1).min(held)
    }

    /// How many jobs `slots` slots run in the time of `claims` claims, at the measured pace;
    /// 0 until a job and a claim have been timed.
    fn run_within_claims(&self, slots: usize, claims: u64) -> usize {
        let (run, claim) = (
            self.run_ns.load(Ordering::Relaxed),
            self.claim_ns.load(Ordering::Relaxed),
        );
        if run == 0 || claim == 0 {
            return 0;
        }
        let jobs = (claims * slots as u64).saturating_mul(claim) / run;
        usize::try_from(jobs).unwrap_or(usize::MAX)
    }
}

/// Writes outcomes in batches: one ack and one nack statement per batch. Acks riding on claims
/// are written here only when no claim took them: at once when none is coming, else after
/// [`WorkerConfig::ack_ride_wait`]; and at shutdown.
async fn complete(
    queue: Queue,
    config: WorkerConfig,
    held: Held,
    riding: Option<Arc<RidingAcks>>,
    mut done: mpsc::UnboundedReceiver<Done>,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut closed = false;
    while !closed {
        let batch = match done.recv().await {
            Some(first) => {
                let mut batch = vec![first];
                let deadline = Instant::now() + config.complete_linger;
                while batch.len() < config.complete_batch {
                    match tokio::time::timeout_at(deadline, done.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                batch
            }
            // Closed: the worker stopped; what still rides is written below.
            None => {
                closed = true;
                Vec::new()
            }
        };
        let mut acks = Vec::new();
        let mut failures = Vec::new();
        let mut claimed = Vec::with_capacity(batch.len());
        for (receipt, outcome, claimed_at) in batch.into_iter().filter_map(|done| match done {
            Done::Outcome(outcome) => Some(outcome),
            Done::Riding => None,
        }) {
            claimed.push(claimed_at);
            match outcome {
                Ok(()) => acks.push(receipt),
                Err(error) => failures.push(error.into_failure(receipt)),
            }
        }
        if let Some(riding) = &riding {
            if !closed {
                // Re-checked every few milliseconds: a claim takes them, or the worker stops
                // claiming (shutdown, an empty queue) and they are written at once.
                let until = Instant::now() + riding.wait_left(config.ack_ride_wait);
                loop {
                    let left = riding
                        .wait_left(config.ack_ride_wait)
                        .min(until.saturating_duration_since(Instant::now()));
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(left.min(Duration::from_millis(5))).await;
                }
            }
            for ack in riding.take() {
                claimed.push(ack.claimed_at);
                acks.push(ack.receipt);
            }
        }
        if acks.is_empty() && failures.is_empty() {
            continue;
        }
        // Keep trying for about half a lease: past that, the claims are lost anyway. Each
        // part is retried on its own, and a retried ack cannot ack twice (fencing).
        let give_up = Instant::now() + lease(&queue) / 2;
        let (mut acked, mut nacked) = (acks.is_empty(), failures.is_empty());
        for attempt in 0_u32.. {
            if !acked {
                let written = queue.ack_many(&acks).await;
                let (ok, lost) = (&mut report.succeeded, &mut report.lease_lost);
                acked = tally(written, acks.len(), ok, lost, "acks", attempt);
            }
            if !nacked {
                let written = queue.nack_many(&failures).await;
                let (ok, lost) = (&mut report.failed, &mut report.lease_lost);
                nacked = tally(written, failures.len(), ok, lost, "failures", attempt);
            }
            if (acked && nacked) || Instant::now() >= give_up {
                let latency = metrics::histogram!(crate::metric_names::CLAIM_TO_COMPLETE_SECONDS);
                for at in &claimed {
                    latency.record(at.elapsed().as_secs_f64());
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
        }
        let mut held = lock(&held);
        for receipt in acks.iter().chain(failures.iter().map(|f| &f.receipt)) {
            held.remove(receipt);
        }
    }
    report
}

/// Counts a batch write of `sent` outcomes into `ok` and `lease_lost` (the refused ones);
/// false, after logging, when the write failed and is to be retried.
fn tally(
    written: Result<Vec<Receipt>>,
    sent: usize,
    ok: &mut u64,
    lease_lost: &mut u64,
    what: &str,
    attempt: u32,
) -> bool {
    match written {
        Ok(refused) => {
            *ok += (sent - refused.len()) as u64;
            *lease_lost += refused.len() as u64;
            true
        }
        Err(error) => {
            tracing::warn!(attempt, %error, "writing {what} failed; retrying");
            false
        }
    }
}

/// Extends the leases of held jobs (buffered, running, awaiting their ack) every third of the
/// lease, and at once when `now` is notified (a cancel), and records how long each accepted
/// one now lasts; a refused one (cancelled, or its lease lost) is recorded as expired, so that
/// it is not started if it is still buffered, and its handler's cancellation token fires.
async fn heartbeat(queue: Queue, held: Held, cancels: Cancels, now: Arc<tokio::sync::Notify>) {
    let lease = lease(&queue);
    loop {
        tokio::select! {
            () = tokio::time::sleep(lease / 3) => {}
            () = now.notified() => {}
        }
        let receipts: Vec<Receipt> = lock(&held).keys().copied().collect();
        if receipts.is_empty() {
            continue;
        }
        let sent = Instant::now();
        let refused: HashSet<Receipt> = match queue.heartbeat(&receipts).await {
            Ok(()) => HashSet::new(),
            Err(crate::Error::LeaseLost { ids }) => {
                tracing::warn!(lost = ids.len(), "heartbeat refused for some claims");
                cancels.cancel(ids.iter().copied());
                let ids: HashSet<_> = ids.into_iter().collect();
                receipts
                    .iter()
                    .filter(|r| ids.contains(&r.id))
                    .copied()
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed");
                continue;
            }
        };
        let mut held = lock(&held);
        for receipt in receipts {
            if let Some(until) = held.get_mut(&receipt) {
                *until = if refused.contains(&receipt) {
                    sent
                } else {
                    sent + lease
                };
            }
        }
    }
}

/// A [`maintenance_round`] every `every`, starting one interval from now; notifies `rescued`
/// when a round returned jobs to the queue.
async fn maintain(
    queue: Queue,
    every: Duration,
    mut next_prune: Instant,
    rescued: Arc<tokio::sync::Notify>,
) {
    let mut rounds = tokio::time::interval_at(Instant::now() + every, every);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        let (freed, next) = maintenance_round(&queue, next_prune).await;
        next_prune = next;
        if freed > 0 {
            rescued.notify_one();
        }
    }
}

/// Returns jobs whose lease expired to the queue, and prunes finished jobs when `next_prune`
/// has come: the jobs rescued, and when to prune next.
async fn maintenance_round(queue: &Queue, next_prune: Instant) -> (u64, Instant) {
    let freed = queue.rescue_expired().await.unwrap_or_else(|error| {
        tracing::warn!(%error, "rescuing expired leases failed");
        0
    });
    (freed, crate::queue::prune_due(queue, next_prune).await)
}

use neo_core::sync::lock;

/// The next notification, or never without a listener (the poll interval wakes the loop).
async fn notification(
    listener: Option<&mut sqlx::postgres::PgListener>,
) -> Result<sqlx::postgres::PgNotification, sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn express_claims_list_the_tenants_named_until_one_names_none_or_too_many() {
        let mut wanted = Express::default();
        assert!(!wanted.is_wanted());
        wanted.add("tenant:b", 2);
        wanted.add("tenant:b", 2);
        wanted.add("tenant:c", 2);
        assert!(wanted.is_wanted());
        assert_eq!(wanted, Express::Tenants(vec!["b".into(), "c".into()]));
        // A third tenant is more than one claim lists: any jobs.
        wanted.add("tenant:d", 2);
        assert_eq!(wanted, Express::Any);
        wanted.add("tenant:e", 2);
        assert!(wanted.is_wanted() && wanted == Express::Any);
        // A notification that names no tenant (jobs without one, of several, requeued).
        let mut any = Express::default();
        any.add("tenant:b", 8);
        any.add("", 8);
        assert!(any.is_wanted() && any == Express::Any);
        let mut first = Express::default();
        first.add("", 8);
        first.add("tenant:b", 8);
        assert!(first.is_wanted() && first == Express::Any);
    }

    #[test]
    fn a_claim_counts_on_the_held_jobs_its_slots_finish_before_it_returns() {
        let pace = Pace::default();
        assert_eq!(pace.finishing(32, 100), 0, "nothing timed yet");
        pace.ran(Duration::from_millis(1));
        pace.claimed(Duration::from_millis(5));
        // 32 slots run five 1 ms jobs each within a 5 ms claim: 160, at most what is held.
        assert_eq!(pace.finishing(32, 1_000), 160);
        assert_eq!(pace.finishing(32, 100), 100);
        let slow = Pace::default();
        slow.ran(Duration::from_secs(1));
        slow.claimed(Duration::from_millis(5));
        assert_eq!(
            slow.finishing(32, 100),
            0,
            "slow jobs free no room meanwhile"
        );
    }
}
