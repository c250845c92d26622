//! The outbox dispatcher for webhooks: events claimed and fanned out in one transaction, the
//! inline first attempts sent before its commit.

use super::Webhooks;
use crate::outbox::link_events;
use crate::{EventError, Outbox};
use tokio::task::JoinSet;
use tracing::Instrument;

impl Webhooks {
    /// One dispatcher round: claims up to the outbox's `batch_size` events and fans them out
    /// ([`fan_out_in`](Self::fan_out_in)) in the same transaction, so the events are marked
    /// processed exactly when their deliveries and jobs exist; returns how many events were
    /// dispatched. The idle path to the receiver then crosses one wake-up, one `BEGIN` and
    /// two statements (claim, fan-out) before the inline first attempt, and no commit (see
    /// [`inline_attempts`](crate::WebhookConfig::inline_attempts)). `outbox` must live in the
    /// webhooks' database.
    ///
    /// # Errors
    /// A database or queue error; the events stay pending (claimed again next round).
    pub async fn dispatch_once(&self, outbox: &Outbox) -> Result<usize, EventError> {
        let span = tracing::info_span!(
            "neo_events.webhook.dispatch",
            events = tracing::field::Empty,
            tenant = tracing::field::Empty,
            links = tracing::field::Empty,
        );
        self.dispatch_round(outbox, &span)
            .instrument(span.clone())
            .await
    }

    /// One round of [`dispatch_once`](Self::dispatch_once) in its span, which links to the
    /// events' trace contexts and names their tenant.
    async fn dispatch_round(
        &self,
        outbox: &Outbox,
        span: &tracing::Span,
    ) -> Result<usize, EventError> {
        let mut tx = self.inner.system.begin().await?;
        let events = outbox.claim(&mut tx).await?;
        if events.is_empty() {
            return Ok(0);
        }
        link_events(span, &events);
        crate::tenancy::record_tenant(span, events.iter().map(crate::DomainEvent::tenant_id));
        // An error drops `tx` (rolled back) and the fanned-out deliveries with it.
        let fanned = self.fan_out_in(&mut tx, &events).await?;
        tx.commit().await?;
        fanned.committed();
        Outbox::count_dispatched(events.len());
        Ok(events.len())
    }

    /// Runs [`dispatch_once`](Self::dispatch_once) until `shutdown` completes, woken as
    /// [`Outbox::run`] is (LISTEN/NOTIFY, the poll interval as fallback): the webhook
    /// dispatcher, instead of `outbox.run` with [`fan_out`](Self::fan_out) as its handler
    /// (which takes two transactions per round). A wake-up starts a round while fewer than
    /// [`dispatch_rounds`](crate::WebhookConfig::dispatch_rounds) are in flight, so an event
    /// published while a round commits is claimed at once (the rounds skip each other's
    /// events). Failed rounds are logged and retried. Waits for the rounds in flight before
    /// returning how many events were dispatched.
    ///
    /// # Errors
    /// A database error that prevents listening.
    pub async fn dispatch(
        &self,
        outbox: &Outbox,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, EventError> {
        let mut wake = outbox.wakeups().await?;
        let mut shutdown = std::pin::pin!(shutdown);
        let (batch, most) = (outbox.batch_size(), self.inner.config.dispatch_rounds);
        let mut rounds = JoinSet::new();
        let mut total = 0_u64;
        self.start_round(&mut rounds, outbox);
        loop {
            tokio::select! {
                Some(done) = rounds.join_next() => {
                    if Self::count_round(done, &mut total) == batch {
                        self.start_round(&mut rounds, outbox); // more may be waiting
                    }
                }
                woken = wake.next_round(&mut shutdown) => {
                    if !woken {
                        while let Some(done) = rounds.join_next().await {
                            Self::count_round(done, &mut total);
                        }
                        return Ok(total);
                    }
                    if rounds.len() < most {
                        self.start_round(&mut rounds, outbox);
                    }
                }
            }
        }
    }

    fn start_round(&self, rounds: &mut JoinSet<Result<usize, EventError>>, outbox: &Outbox) {
        let (webhooks, outbox) = (self.clone(), outbox.clone());
        rounds.spawn(async move { webhooks.dispatch_once(&outbox).await });
    }

    /// Adds a finished round's events to `total`; returns them (0 for a failed round).
    fn count_round(
        done: Result<Result<usize, EventError>, tokio::task::JoinError>,
        total: &mut u64,
    ) -> usize {
        match done {
            Ok(Ok(n)) => {
                *total += n as u64;
                n
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "webhook dispatch failed; retrying");
                0
            }
            Err(error) => {
                tracing::error!(%error, "webhook dispatch round panicked");
                0
            }
        }
    }
}
