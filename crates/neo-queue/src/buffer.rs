//! The worker's local buffer of claimed jobs not yet started ([`WorkerConfig::prefetch`]).
//!
//! [`WorkerConfig::prefetch`]: crate::WorkerConfig::prefetch

use crate::{Job, Receipt};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use tokio::time::Instant;

/// Claimed jobs waiting for a slot, in the order they start, each with when it arrived.
///
/// When the queue's claims take turns across tenants, the buffer takes turns too: a job whose
/// tenant has nothing waiting here starts before the waiting jobs of its priority or lower
/// (in the order its claim chose), as the claim put it before them. Without that, a quiet
/// tenant's job, though claimed first, waited behind every job a busy tenant had buffered.
/// Otherwise the buffer is first in, first out.
#[derive(Debug)]
pub(crate) struct Buffer {
    jobs: VecDeque<(Job, Instant)>,
    /// With turns: jobs waiting per tenant (by a hash of the tenant; a collision only means a
    /// job waits its place instead of taking a turn).
    waiting: Option<HashMap<u64, usize>>,
    hasher: RandomState,
}

impl Buffer {
    /// An empty buffer; `turns` when the queue's claims take turns across tenants.
    pub(crate) fn new(turns: bool) -> Self {
        Buffer {
            jobs: VecDeque::new(),
            waiting: turns.then(HashMap::new),
            hasher: RandomState::new(),
        }
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Adds the jobs of one claim, in the claim's order, arrived `at`.
    pub(crate) fn extend(&mut self, jobs: Vec<Job>, at: Instant) {
        let Some(waiting) = self.waiting.as_mut() else {
            self.jobs.extend(jobs.into_iter().map(|job| (job, at)));
            return;
        };
        // Where the next job that takes a turn goes: after those this claim already put
        // ahead, and after every waiting job of a higher priority.
        let mut ahead = 0;
        for job in jobs {
            let count = waiting
                .entry(self.hasher.hash_one(job.tenant.as_deref()))
                .or_default();
            *count += 1;
            if *count > 1 {
                self.jobs.push_back((job, at));
                continue;
            }
            while self
                .jobs
                .get(ahead)
                .is_some_and(|(queued, _)| queued.priority > job.priority)
            {
                ahead += 1;
            }
            self.jobs.insert(ahead, (job, at));
            ahead += 1;
        }
    }

    /// The next job to start.
    pub(crate) fn pop(&mut self) -> Option<(Job, Instant)> {
        let next = self.jobs.pop_front()?;
        if let Some(waiting) = self.waiting.as_mut() {
            let key = self.hasher.hash_one(next.0.tenant.as_deref());
            if let Some(count) = waiting.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(&key);
                }
            }
        }
        Some(next)
    }

    /// Empties the buffer (shutdown): the receipts of every waiting job.
    pub(crate) fn drain(&mut self) -> Vec<Receipt> {
        if let Some(waiting) = self.waiting.as_mut() {
            waiting.clear();
        }
        self.jobs.drain(..).map(|(job, _)| job.receipt()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tenant: Option<&str>, priority: i16, n: u64) -> Job {
        Job {
            id: neo_core::JobId::new(),
            kind: "k".to_owned(),
            payload: serde_json::json!(n),
            priority,
            attempt: 1,
            max_attempts: 3,
            tenant: tenant.map(str::to_owned),
            last_error: None,
            created_at: chrono::Utc::now(),
            fence: 1,
            trace_context: None,
        }
    }

    fn order(buffer: &mut Buffer) -> Vec<u64> {
        std::iter::from_fn(|| buffer.pop())
            .map(|(job, _)| job.payload.as_u64().unwrap_or(u64::MAX))
            .collect()
    }

    /// A quiet tenant's job, claimed after a busy tenant's jobs were buffered, starts before
    /// them; a second job of a tenant already waiting keeps its place.
    #[test]
    fn with_turns_a_tenant_with_nothing_waiting_goes_first() {
        let mut buffer = Buffer::new(true);
        let now = Instant::now();
        buffer.extend(vec![job(Some("a"), 0, 1), job(Some("a"), 0, 2)], now);
        buffer.extend(
            vec![job(Some("b"), 0, 3), job(Some("a"), 0, 4), job(None, 0, 5)],
            now,
        );
        buffer.extend(vec![job(Some("b"), 0, 6)], now);
        assert_eq!(order(&mut buffer), vec![3, 5, 1, 2, 4, 6]);
        // Once b's jobs have started, its next one takes a turn again.
        buffer.extend(vec![job(Some("a"), 0, 7), job(Some("a"), 0, 8)], now);
        buffer.extend(vec![job(Some("b"), 0, 9)], now);
        assert_eq!(order(&mut buffer), vec![9, 7, 8]);
    }

    /// A turn never puts a job before a waiting job of a higher priority.
    #[test]
    fn a_turn_stays_behind_higher_priorities() {
        let mut buffer = Buffer::new(true);
        let now = Instant::now();
        buffer.extend(vec![job(Some("a"), 5, 1), job(Some("a"), 0, 2)], now);
        // A claim's jobs come in order of priority.
        buffer.extend(vec![job(Some("c"), 9, 3), job(Some("b"), 0, 4)], now);
        assert_eq!(order(&mut buffer), vec![3, 1, 4, 2]);
    }

    /// Without turns the buffer is first in, first out, and a drain hands back everything.
    #[test]
    fn without_turns_it_is_first_in_first_out() {
        let mut buffer = Buffer::new(false);
        let now = Instant::now();
        buffer.extend(vec![job(Some("a"), 0, 1), job(Some("a"), 0, 2)], now);
        buffer.extend(vec![job(Some("b"), 9, 3)], now);
        assert_eq!(buffer.len(), 3);
        assert_eq!(order(&mut buffer), vec![1, 2, 3]);
        buffer.extend(vec![job(Some("a"), 0, 4), job(None, 0, 5)], now);
        assert_eq!(buffer.drain().len(), 2);
        assert!(buffer.is_empty() && buffer.pop().is_none());
    }
}
