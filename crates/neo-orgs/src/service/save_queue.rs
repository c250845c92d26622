//! The save queue: concurrent saves grouped into one statement (through neo-batch's
//! `WriteBatcher`), and batches written in parts.

use super::OrganizationService;
use super::write::saved;
use crate::model::now;
use crate::store::Write;
use crate::{OrgError, Organization, OrganizationStore};
use futures_util::StreamExt;
use neo_batch::{BatcherConfig, WriteBatcher};
use neo_core::{OrganizationId, TenantId};
use neo_events::DomainEvent;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A save queued for its group's statement.
#[derive(Clone)]
pub(super) struct QueuedSave {
    /// The caller's tenant: its group is written in its scope.
    tenant: Option<TenantId>,
    actor: String,
    action: &'static str,
    organization: Organization,
    events: Vec<DomainEvent>,
}

/// Concurrent saves grouped into one statement by neo-batch's [`WriteBatcher`]: with a zero
/// linger a group is taken, when one of `concurrency` statements is free, from the saves
/// queued then, so groups grow with load and an idle save waits for nothing; each save gets
/// its own answer (the organization at its new version, or why it was not saved).
pub(super) type SaveQueue = WriteBatcher<QueuedSave, Result<Organization, OrgError>>;

impl OrganizationService {
    /// Checks, then writes through the save queue: the row, its audit record and its
    /// events; the domains too when they changed.
    pub(super) async fn write(
        &self,
        actor: &str,
        mut org: Organization,
        action: &'static str,
    ) -> Result<Organization, OrgError> {
        self.check(&org, false).await?;
        let events = self.notifications(&mut org);
        org.updated_at = now();
        let queued = QueuedSave {
            tenant: self.inner.store.tenant()?,
            actor: actor.to_owned(),
            action,
            organization: org,
            events,
        };
        let saved = self
            .save_queue()?
            .submit(queued)
            .await
            .map_err(|e| match e {
                neo_batch::Error::Shutdown => {
                    OrgError::Unavailable("the save queue has stopped".to_owned())
                }
                other => OrgError::Unavailable(format!("the save was abandoned: {other}")),
            })??;
        self.forget(&[saved.id]).await;
        self.wrote().await;
        Ok(saved)
    }

    /// The save queue, started by the first save (it needs a tokio runtime).
    fn save_queue(&self) -> Result<&SaveQueue, OrgError> {
        if let Some(queue) = self.inner.saves.get() {
            return Ok(queue);
        }
        let config = self.inner.config.saves;
        let store = Arc::clone(&self.inner.store);
        let batcher = BatcherConfig {
            max_batch: config.max_batch,
            linger: Duration::ZERO,
            queue_capacity: config.queue_capacity,
            concurrency: config.concurrency,
            ..BatcherConfig::default()
        };
        let queue = WriteBatcher::with_results(batcher, move |saves: Vec<QueuedSave>| {
            write_group(Arc::clone(&store), saves)
        })
        .map_err(|e| OrgError::invalid("saves configuration", e.to_string()))?;
        // Two first saves at once may both start a queue: one is kept, the other stops.
        Ok(self.inner.saves.get_or_init(|| queue))
    }
}

/// A queued save and the slot of its answer.
type Slotted = (usize, QueuedSave);

/// Writes one group of queued saves and answers each, in order: the saves of each tenant
/// together, in that tenant's scope (a statement never mixes tenants).
async fn write_group(
    store: Arc<dyn OrganizationStore>,
    saves: Vec<QueuedSave>,
) -> Result<Vec<Result<Organization, OrgError>>, OrgError> {
    let mut answers: Vec<Option<Result<Organization, OrgError>>> =
        saves.iter().map(|_| None).collect();
    let mut by_tenant: Vec<(Option<TenantId>, Vec<Slotted>)> = Vec::new();
    for (slot, save) in saves.into_iter().enumerate() {
        match by_tenant
            .iter_mut()
            .find(|(tenant, _)| *tenant == save.tenant)
        {
            Some((_, group)) => group.push((slot, save)),
            None => by_tenant.push((save.tenant, vec![(slot, save)])),
        }
    }
    for (tenant, group) in by_tenant {
        super::within(
            tenant,
            write_tenant_group(store.as_ref(), group, &mut answers),
        )
        .await;
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(OrgError::invalid("organization", "not saved"))))
        .collect())
}

/// Writes one tenant's queued saves with one statement, answering each in its slot. The
/// same organization twice: its later saves go into following statements, each checked
/// against its own version.
async fn write_tenant_group(
    store: &dyn OrganizationStore,
    saves: Vec<Slotted>,
    answers: &mut [Option<Result<Organization, OrgError>>],
) {
    let mut pending = saves;
    while !pending.is_empty() {
        let mut ids: HashSet<OrganizationId> = HashSet::with_capacity(pending.len());
        let (round, later): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, save)| ids.insert(save.organization.id));
        let writes: Vec<Write<'_>> = round
            .iter()
            .map(|(_, s)| Write::new(&s.actor, s.action, &s.organization, &s.events))
            .collect();
        let outcomes = write_each_or_alone(store, &writes).await;
        drop(writes);
        for ((slot, save), outcome) in round.into_iter().zip(outcomes) {
            answers[slot] = Some(outcome.map(|version| saved(save.organization, version)));
        }
        pending = later;
    }
}

/// Writes in statements of at most `rows` organizations, split in id order and run
/// `concurrency` at a time; returns the outcomes aligned with `writes`.
pub(super) async fn write_in_parts(
    store: &dyn OrganizationStore,
    writes: &[Write<'_>],
    rows: usize,
    concurrency: usize,
) -> Vec<Result<i64, OrgError>> {
    if writes.len() <= rows {
        return write_each_or_alone(store, writes).await;
    }
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|&i| writes[i].organization.id);
    let sorted: Vec<Write<'_>> = order.iter().map(|&i| writes[i]).collect();
    let parts: Vec<Vec<Result<i64, OrgError>>> = futures_util::stream::iter(sorted.chunks(rows))
        .map(|part| write_each_or_alone(store, part))
        .buffered(concurrency)
        .collect()
        .await;
    let mut outcomes: Vec<Option<Result<i64, OrgError>>> = writes.iter().map(|_| None).collect();
    for (i, outcome) in order.into_iter().zip(parts.into_iter().flatten()) {
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(OrgError::invalid("organization", "not saved"))))
        .collect()
}

/// Writes `writes` with one store call; when the whole call fails (a duplicate domain, say),
/// writes each alone so that only the culprit fails.
async fn write_each_or_alone(
    store: &dyn OrganizationStore,
    writes: &[Write<'_>],
) -> Vec<Result<i64, OrgError>> {
    if writes.is_empty() {
        return Vec::new();
    }
    match store.update(writes).await {
        Ok(outcomes) => outcomes,
        Err(error) if writes.len() == 1 => vec![Err(error)],
        Err(_) => {
            let mut outcomes = Vec::with_capacity(writes.len());
            for write in writes {
                outcomes.push(match store.update(std::slice::from_ref(write)).await {
                    Ok(mut one) => one.pop().unwrap_or_else(|| {
                        Err(OrgError::invalid(
                            "organization",
                            "the store returned no outcome",
                        ))
                    }),
                    Err(error) => Err(error),
                });
            }
            outcomes
        }
    }
}
