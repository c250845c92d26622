//! Multi-region delivery: an endpoint may name a region ([`NewEndpoint::region`]); its
//! deliveries' jobs are of the region's own job kind (`{job_kind}:{region}`), so a worker
//! set up with [`Webhooks::handle_region`] claims only that region's deliveries, and
//! [`Webhooks::handle`] only those of endpoints without a region. A region whose workers are
//! stopped holds back only its own deliveries: other regions' workers never see its jobs.
//!
//! [`NewEndpoint::region`]: crate::NewEndpoint::region

use super::store::Webhooks;
use crate::EventError;
use neo_queue::Worker;
use std::borrow::Cow;

/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 63;

/// Checks a region name: 1 to [`MAX_REGION_LEN`] bytes of `a-z`, `0-9`, `_` and `-`.
pub(in crate::webhook) fn validate_region(region: &str) -> Result<(), EventError> {
    let ok = !region.is_empty()
        && region.len() <= MAX_REGION_LEN
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::Invalid {
            what: "endpoint region",
            reason: format!(
                "{:?} is not 1 to {MAX_REGION_LEN} bytes of a-z, 0-9, _ and -",
                region.chars().take(64).collect::<String>()
            ),
        })
    }
}

impl Webhooks {
    /// Registers the delivery handler on `worker` for the endpoints of `region` only (see
    /// [`handle`](Self::handle) for the endpoints without a region): run one worker pool per
    /// region, each near its receivers. Its jobs are of kind `{job_kind}:{region}`.
    ///
    /// Every worker on the queue must then claim only the kinds it handles
    /// ([`WorkerConfig::only_known_kinds`](neo_queue::WorkerConfig::only_known_kinds)),
    /// the default region's ([`handle`](Self::handle)) too: a worker claiming every kind would
    /// take another region's jobs and dead-letter them as unknown.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(webhooks: neo_events::Webhooks, queue: neo_queue::Queue) -> Result<(), neo_events::EventError> {
    /// use neo_events::NewEndpoint;
    /// webhooks
    ///     .create_endpoint(NewEndpoint::new("https://eu.example.com/hook").subscribe("*").region("eu-west"))
    ///     .await?;
    /// // In the eu-west deployment:
    /// let config = neo_queue::WorkerConfig { only_known_kinds: true, ..Default::default() };
    /// let worker = webhooks.handle_region(neo_queue::Worker::new(queue, config), "eu-west")?;
    /// worker.run(std::future::pending()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad region name, or a worker that claims every kind.
    pub fn handle_region(&self, worker: Worker, region: &str) -> Result<Worker, EventError> {
        validate_region(region)?;
        if !worker.claims_only_known_kinds() {
            return Err(EventError::Invalid {
                what: "region worker",
                reason: "it must claim only the kinds it handles (WorkerConfig::only_known_kinds)"
                    .into(),
            });
        }
        Ok(self.handle_kind(worker, &self.job_kind(Some(region))))
    }

    /// The job kind of deliveries to endpoints of `region`.
    pub(in crate::webhook) fn job_kind(&self, region: Option<&str>) -> Cow<'_, str> {
        match region {
            None => Cow::Borrowed(self.inner.config.job_kind.as_str()),
            Some(region) => Cow::Owned(format!("{}:{region}", self.inner.config.job_kind)),
        }
    }
}
