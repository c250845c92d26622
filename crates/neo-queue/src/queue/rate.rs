//! The rate limit ([`QueueConfig::rate_limit`](crate::QueueConfig::rate_limit)): at most
//! `allowed` jobs of a partition (the queue, a tenant or a kind) started in any window of
//! `period`, across every worker, enforced in the claim statement itself.
//!
//! Starts are counted in `rate_limit_starts` (migration 16), a row per partition and slot:
//! a slot is a sixteenth of the period, and a claim adds the jobs it takes of each partition
//! to the slot that ends at or after the claim's time (rounded up), in the claim statement
//! (`INSERT .. ON CONFLICT DO UPDATE`). A claim counts the starts of each partition whose slot
//! ends within the last period, and takes at most what is left: a start counts for at least
//! a full period after it happened (at most a sixteenth more), so no window of `period` ever
//! holds more than `allowed` starts. The claim deletes the expired slots of the partitions it
//! touched; [`Queue::prune`](crate::Queue::prune) deletes the rest.
//!
//! Partitions at their limit are left out of the claim's scan (their jobs are skipped, not
//! taken and dropped), so a noisy partition at its limit does not hold back the others. A
//! claim's time is `statement_timestamp()`: claims of a rate-limited queue take turns through
//! the advisory lock of [`super::limit`], taken in a statement of its own, so the claim's
//! statement starts after the previous claim committed and its snapshot sees that claim's
//! starts. A worker that dies mid-window holds no budget: its starts expire with the window.
//!
//! Under row-level security the table has row-level security forced and no policy
//! (migration 17 of that set): only the `BYPASSRLS` system role that claims reads or writes it.

use crate::{RateLimit, RatePartition};
use neo_db::TableName;

/// Slots per period.
const SLOTS: u64 = 16;

/// The pieces of a rate-limited claim statement, for one queue's table and limit.
#[derive(Debug)]
pub(super) struct Rate {
    starts: TableName,
    allowed: u32,
    period_ms: u64,
    slot_ms: u64,
    partition: RatePartition,
}

impl Rate {
    pub(super) fn new(jobs: &TableName, limit: &RateLimit) -> Self {
        let period_ms = u64::try_from(limit.period.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        Rate {
            starts: super::pause::sibling(jobs, "rate_limit_starts"),
            allowed: limit.allowed,
            period_ms,
            slot_ms: period_ms.div_ceil(SLOTS).max(1),
            partition: limit.partition,
        }
    }

    /// The partition of the job row `row` (an alias): text, never null.
    pub(super) fn key(&self, row: &str) -> String {
        match self.partition {
            RatePartition::Queue => "''::text".to_owned(),
            RatePartition::Tenant => format!("coalesce({row}.tenant, '')"),
            RatePartition::Kind => format!("{row}.kind"),
        }
    }

    /// `rate_used(partition, n)`: the starts of each partition within the last period.
    pub(super) fn used_cte(&self) -> String {
        let (s, period) = (&self.starts, self.period_ms);
        format!(
            "rate_used AS MATERIALIZED (SELECT partition, sum(started) AS n FROM {s} \
             WHERE slot > statement_timestamp() - {period} * interval '1 millisecond' GROUP BY partition), "
        )
    }

    /// The condition that the job row `row`'s partition has room left in the window: the
    /// scans leave out the jobs of partitions at their limit.
    pub(super) fn open(&self, row: &str) -> String {
        self.open_key(&self.key(row))
    }

    /// The condition that partition `key` (an expression) has room left in the window.
    pub(super) fn open_key(&self, key: &str) -> String {
        format!(
            "AND {key} NOT IN (SELECT partition FROM rate_used WHERE n >= {})",
            self.allowed
        )
    }

    /// Whether partitions are tenants: the claim then takes turns across tenants (its scans
    /// are per tenant, so a tenant at its limit is left out before its jobs are read).
    pub(super) fn per_tenant(&self) -> bool {
        self.partition == RatePartition::Tenant
    }

    /// `spent`, over candidates `c` with a `part` column: the starts the partition would
    /// have once this job starts (its place among the partition's candidates, in claim
    /// order within priority, plus its starts in the window).
    pub(super) fn spent(&self) -> &'static str {
        "row_number() OVER (PARTITION BY c.part ORDER BY c.priority DESC, c.run_at, c.id) \
         + coalesce((SELECT u.n FROM rate_used AS u WHERE u.partition = c.part), 0) AS spent"
    }

    /// The condition on candidates' `spent`.
    pub(super) fn within(&self) -> String {
        format!("spent <= {}", self.allowed)
    }

    /// The CTEs after `claimed` that count its jobs' starts and delete the expired slots of
    /// the partitions it touched.
    pub(super) fn record(&self) -> String {
        let (s, slot, period) = (&self.starts, self.slot_ms, self.period_ms);
        let key = self.key("claimed");
        format!(
            ", rate_started AS (INSERT INTO {s} AS s (partition, slot, started) \
             SELECT {key}, timestamptz 'epoch' + (ceil(extract(epoch FROM statement_timestamp()) * 1000 / {slot}) * {slot})::float8 \
             * interval '1 millisecond', count(*) FROM claimed GROUP BY 1 \
             ON CONFLICT (partition, slot) DO UPDATE SET started = s.started + EXCLUDED.started), \
             rate_expired AS (DELETE FROM {s} AS s \
             WHERE s.slot <= statement_timestamp() - {period} * interval '1 millisecond' \
             AND s.partition IN (SELECT {key} FROM claimed)) "
        )
    }
}

/// Migration 17 of the row-level-security set: `rate_limit_starts` with row-level security
/// enabled and forced and no policy, so that only a `BYPASSRLS` role (the system role that
/// claims) sees its rows: its partitions may be tenants' ids.
pub(super) const RLS_MIGRATION: &str = "ALTER TABLE rate_limit_starts ENABLE ROW LEVEL SECURITY;\n\
     ALTER TABLE rate_limit_starts FORCE ROW LEVEL SECURITY;\n";
