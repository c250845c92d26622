//! A first attempt made inline, by the fan-out that created its delivery, and what it waits
//! for before recording anything.

use chrono::Utc;

/// A first attempt made by fan-out itself: its job `job` is due at `job_due` (and makes the
/// retry, moved to the retry's time when the attempt fails); `committed` turns true once the deliveries' transaction committed, and closes
/// without turning true when it did not (nothing may be recorded then).
pub(in crate::webhook) struct InlineAttempt {
    pub(in crate::webhook) job: neo_core::JobId,
    pub(in crate::webhook) job_due: chrono::DateTime<Utc>,
    pub(in crate::webhook) committed: tokio::sync::watch::Receiver<bool>,
}

impl InlineAttempt {
    /// Waits for the fan-out's transaction; whether it committed.
    pub(in crate::webhook) async fn committed(&mut self) -> bool {
        self.committed
            .wait_for(|committed| *committed)
            .await
            .is_ok()
    }
}
