//! Read replicas: what routing a read costs. An organization `get` that misses the cache
//! (a service without one), with replica routing on (the `Db` has a replica; the read goes
//! there after a clock read and a few atomic loads, the replay position being refreshed in
//! the background) next to the same `get` on a `Db` without replicas whose URL is the
//! replica's: the same query on the same server, so the ratio is the routing's cost alone
//! (two different servers would differ by more than 5 % on a busy two-core machine).

use crate::{Pair, check};
use neo_core::OrganizationId;
use neo_db::{Db, DbConfig, ReplicaConfig};
use neo_events::{Outbox, OutboxConfig};
use neo_orgs::{OrgConfig, OrganizationService};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SCHEMA: &str = "bench_replica";

/// A primary and a streaming replica of the bench's own (durable, as the bench PostgreSQL),
/// alive as long as the process; their URLs.
fn pair() -> (String, String) {
    let pair = check(neo_testkit::PgReplicaPair::start_with(
        neo_testkit::PgReplicaOptions {
            server: neo_testkit::PgServerOptions {
                durable: true,
                ..neo_testkit::PgServerOptions::default()
            },
            ..neo_testkit::PgReplicaOptions::default()
        },
    ));
    let urls = (pair.primary().url(), pair.replica().url());
    // The servers live as long as the process; their watchdogs remove them afterwards.
    std::mem::forget(pair);
    urls
}

async fn service(db: &Db, migrate: bool) -> OrganizationService {
    let outbox = check(Outbox::new(
        db,
        OutboxConfig {
            schema: format!("{SCHEMA}_events"),
            channel: format!("{SCHEMA}_events"),
            ..OutboxConfig::default()
        },
    ));
    let orgs = check(OrganizationService::new(
        db,
        outbox,
        None,
        OrgConfig {
            schema: SCHEMA.to_owned(),
            ..OrgConfig::default()
        },
    ));
    if migrate {
        check(orgs.migrate().await);
    }
    orgs
}

/// The pairs of this module on a primary and its replica.
pub fn pairs_on(primary: &str, replica: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    let (routed, direct, ids) = rt.block_on(async {
        let primary_db = crate::db::connect(primary, 32).await;
        let writer = service(&primary_db, true).await;
        let ids = crate::orgs::seed(&writer, "replica", 1_000).await;
        // The replica's tables come from the primary (it is read-only: no migration).
        let direct = service(&crate::db::connect(replica, 32).await, false).await;
        let routed_db = check(
            Db::connect(&DbConfig {
                max_connections: 32,
                replica: ReplicaConfig {
                    urls: vec![replica.into()],
                    max_connections: Some(32),
                    ..ReplicaConfig::default()
                },
                ..DbConfig::with_url(primary)
            })
            .await,
        );
        let routed = service(&routed_db, false).await;
        // Wait until the replica has the seeded rows and serves reads.
        let last = *ids.last().unwrap_or_else(|| panic!("seeded nothing"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while routed_db.replica_status().iter().all(|r| !r.serving)
            || routed.get(last).await.is_err()
            || direct.get(last).await.is_err()
        {
            assert!(Instant::now() < deadline, "the replica never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (routed, direct, ids)
    });
    let (rt1, rt2) = (Rc::clone(&rt), Rc::clone(&rt));
    let ids2: Vec<OrganizationId> = ids.clone();
    let (mut at1, mut at2) = (0_usize, 0_usize);
    vec![Pair {
        name: "replica/orgs_get_uncached_routed_vs_unrouted",
        // Issue 26: replica routing adds at most 5 % to a get that misses the cache.
        target: Some(1.05),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            at1 = (at1 + 1) % ids.len();
            check(rt1.block_on(routed.get(ids[at1])));
        }),
        raw: Box::new(move || {
            at2 = (at2 + 1) % ids2.len();
            check(rt2.block_on(direct.get(ids2[at2])));
        }),
    }]
}

/// The pairs of this module, on a replicated pair started for them.
pub fn pairs() -> Vec<Pair> {
    let (primary, replica) = pair();
    pairs_on(&primary, &replica)
}

#[cfg(test)]
mod tests {
    /// The pair runs against the test replicated PostgreSQL.
    #[test]
    fn the_replica_pair_runs() {
        let rt = crate::runtime();
        let db = rt.block_on(async {
            let pair = neo_testkit::postgres_replicated().await;
            pair.database().await.unwrap_or_else(|e| panic!("{e}"))
        });
        crate::run_each_once(super::pairs_on(db.primary().url(), db.replica_url()));
    }
}
