//! The global concurrency limit ([`QueueConfig::max_running`](crate::QueueConfig::max_running)):
//! at most that many jobs of the queue claimed (running, or buffered by a worker) at once,
//! across every worker. Enforced in the claim statement: the claim's final `LIMIT` becomes
//! `least(asked, limit - claimed now)`, where "claimed now" counts the jobs whose lease has
//! not expired (from the `jobs_lease` index). A worker that dies holding slots frees them
//! when its leases expire, before the rescue runs. Claims of a limited queue are serialised
//! by the transaction-scoped advisory lock of the per-tenant cap, taken in a statement of its
//! own before the claim, so that the claim's snapshot sees every claim committed before it.

use neo_db::TableName;

/// `claim` (a claim statement's text) with its last `LIMIT $1` bounded by the room left under
/// `max_running`; unchanged without a limit.
pub(super) fn limited(claim: String, t: &TableName, max_running: Option<u32>) -> String {
    let Some(max) = max_running else {
        return claim;
    };
    let room = format!(
        "greatest(0, {max} - (SELECT count(*) FROM {t} AS held \
         WHERE held.state = 'running' AND held.lease_owner IS NOT NULL AND held.lease_expires_at > now()))"
    );
    // Only the last `LIMIT $1`: the one that bounds the jobs the claim takes (the plain
    // claim has one; a fair claim's earlier ones bound each tenant's candidates, which the
    // room need not, and each would count the leases again).
    match claim.rfind("LIMIT $1") {
        Some(at) => format!(
            "{}LIMIT least($1, {room}){}",
            &claim[..at],
            &claim[at + "LIMIT $1".len()..]
        ),
        None => claim,
    }
}
