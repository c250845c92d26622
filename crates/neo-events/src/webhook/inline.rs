//! A first attempt made inline, by the fan-out that created its delivery, and what it waits
//! for before recording anything.

use chrono::Utc;

/// The job of a first attempt made inline: due at `due` (the backstop), of the delivery's
/// `tenant` (whose queue view moves or withdraws it: a tenant-isolated queue acts for one).
#[derive(Debug, Clone, Copy)]
pub(in crate::webhook) struct InlineJob {
    pub(in crate::webhook) id: neo_core::JobId,
    pub(in crate::webhook) due: chrono::DateTime<Utc>,
    pub(in crate::webhook) tenant: Option<neo_core::TenantId>,
}

impl InlineJob {
    /// `queue` acting for the job's tenant, when it has one.
    pub(in crate::webhook) fn queue(&self, queue: &neo_queue::Queue) -> neo_queue::Queue {
        match self.tenant {
            Some(tenant) => queue.for_tenant(tenant),
            None => queue.clone(),
        }
    }
}

/// Withdraws `jobs` (inline attempts' jobs whose deliveries settled): one statement per
/// tenant among them, on `queue` acting for it ([`InlineJob::queue`]).
pub(in crate::webhook) async fn withdraw(
    queue: &neo_queue::Queue,
    jobs: &[InlineJob],
) -> Result<(), neo_queue::Error> {
    let mut jobs = jobs.to_vec();
    jobs.sort_unstable_by_key(|job| job.tenant);
    for same_tenant in jobs.chunk_by(|a, b| a.tenant == b.tenant) {
        let ids: Vec<neo_core::JobId> = same_tenant.iter().map(|job| job.id).collect();
        same_tenant[0].queue(queue).withdraw(&ids).await?;
    }
    Ok(())
}

/// A first attempt made by fan-out itself: its `job` makes the retry (moved to the retry's
/// time when the attempt fails) and is withdrawn when the attempt settles the delivery;
/// `committed` turns true once the deliveries' transaction committed, and closes without
/// turning true when it did not (nothing may be recorded then).
pub(in crate::webhook) struct InlineAttempt {
    pub(in crate::webhook) job: InlineJob,
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
