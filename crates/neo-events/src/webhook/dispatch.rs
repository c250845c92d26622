//! The outbox dispatcher for webhooks: events claimed and fanned out in one transaction, the
//! inline first attempts sent before its commit.

use super::Webhooks;
use crate::{EventError, Outbox};

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
        let mut tx = self.inner.db.begin().await?;
        let events = outbox.claim(&mut tx).await?;
        if events.is_empty() {
            return Ok(0);
        }
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
    /// (which takes two transactions per round). Failed rounds are logged and retried.
    /// Returns how many events were dispatched.
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
        let batch = outbox.batch_size();
        let mut total = 0_u64;
        loop {
            match self.dispatch_once(outbox).await {
                Ok(n) if n == batch => {
                    total += n as u64;
                    continue;
                }
                Ok(n) => total += n as u64,
                Err(error) => tracing::warn!(%error, "webhook dispatch failed; retrying"),
            }
            if !wake.next_round(&mut shutdown).await {
                return Ok(total);
            }
        }
    }
}
