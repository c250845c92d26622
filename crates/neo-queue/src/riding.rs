//! Acks that ride on claims: a succeeded job's ack waits here for the worker's next claim,
//! which writes it in the claim's own transaction
//! ([`Queue::ack_and_claim`](crate::Queue::ack_and_claim)), so that a drain
//! pays one commit per claim instead of one per claim and one per ack batch. The completer
//! writes the acks no claim took: at once when no claim is coming, else once the oldest has
//! waited [`WorkerConfig::ack_ride_wait`](crate::WorkerConfig::ack_ride_wait).
//!
//! An ack is taken by one writer only (the claim that takes it or the completer); a claim that
//! fails puts what it took back, and nothing is acknowledged unless its transaction commits.

use crate::Receipt;
use neo_core::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One waiting ack: the claim, when it was claimed and when its job finished.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Riding {
    pub(crate) receipt: Receipt,
    pub(crate) claimed_at: Instant,
    finished_at: Instant,
}

/// The acks waiting for a claim, and whether a claim is coming.
#[derive(Debug, Default)]
pub(crate) struct RidingAcks {
    waiting: Mutex<Vec<Riding>>,
    /// Set by the worker loop: a claim is in flight, or the queue may have more jobs (so a
    /// claim follows as soon as there is room).
    claim_coming: AtomicBool,
}

impl RidingAcks {
    /// A finished job's ack waits for the next claim.
    pub(crate) fn push(&self, receipt: Receipt, claimed_at: Instant) {
        lock(&self.waiting).push(Riding {
            receipt,
            claimed_at,
            finished_at: Instant::now(),
        });
    }

    /// Every waiting ack, now owned by the caller.
    pub(crate) fn take(&self) -> Vec<Riding> {
        std::mem::take(&mut *lock(&self.waiting))
    }

    /// Acks a failed claim took, back to wait for the next writer.
    pub(crate) fn put_back(&self, acks: Vec<Riding>) {
        lock(&self.waiting).extend(acks);
    }

    /// Tells the completer whether a claim is coming.
    pub(crate) fn set_claim_coming(&self, coming: bool) {
        self.claim_coming.store(coming, Ordering::Relaxed);
    }

    /// How long the completer still lets the waiting acks wait for a claim: zero when none
    /// wait, when no claim is coming, or when the oldest has waited `wait`.
    pub(crate) fn wait_left(&self, wait: Duration) -> Duration {
        if !self.claim_coming.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        lock(&self.waiting)
            .iter()
            .map(|r| r.finished_at)
            .min()
            .map_or(Duration::ZERO, |oldest| {
                wait.saturating_sub(oldest.elapsed())
            })
    }
}

/// The receipts of `acks`.
pub(crate) fn receipts(acks: &[Riding]) -> Vec<Receipt> {
    acks.iter().map(|r| r.receipt).collect()
}
