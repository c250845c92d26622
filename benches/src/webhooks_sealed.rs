//! Webhooks with endpoint secrets and headers sealed at rest against the same webhooks storing
//! them in plain text: the drain rate of the delivery pipeline (a delivery opens its
//! endpoint's secret and header with cached data keys) and the cost of `create_endpoint`
//! (sealing the secret and each header value).

use crate::events::{DELIVERIES, Pipeline, fresh_queue};
use crate::{Pair, check};
use neo_core::SecretString;
use neo_db::seal::{SealConfig, Sealer};
use neo_events::{AddressPolicy, NewEndpoint, WebhookConfig, Webhooks};
use neo_queue::QueueConfig;
use std::rc::Rc;
use tokio::runtime::Runtime;

/// The drain rate with sealing must be at least 95% of the rate without: its time at most
/// 1/0.95 of the plain pipeline's.
pub const DRAIN_TARGET: f64 = 1.0 / 0.95;
/// Sealing may add at most this much to one `create_endpoint`.
pub const CREATE_ENDPOINT_BUDGET_NS: f64 = 50_000.0;

/// A receiver's credential, sent as a custom header (sealed with the secret).
const AUTHORIZATION: &str = "Bearer bench-receiver-credential-6f1d2c";

/// A sealer over one configured key, as `NEO_DB_SEAL__*` would give it.
fn sealer() -> Sealer {
    check(Sealer::from_config(&SealConfig {
        current_key_id: "bench-k1".into(),
        keys: [(
            "bench-k1".to_owned(),
            SecretString::from("YmVuY2gta2V5LW5vdC1mb3ItcHJvZHVjdGlvbi0zMmI="),
        )]
        .into(),
        ..SealConfig::default()
    }))
}

fn with_header(endpoint: NewEndpoint) -> NewEndpoint {
    endpoint.header("authorization", AUTHORIZATION)
}

/// Draining `DELIVERIES` through a sealed pipeline against a plain one; both endpoints carry
/// a custom header next to their secret.
fn drain_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let sealed = Rc::new(tokio::sync::OnceCell::<Pipeline>::new());
    let plain = Rc::new(tokio::sync::OnceCell::<Pipeline>::new());
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    let (url_ours, url_raw) = (url.to_owned(), url.to_owned());
    Pair {
        name: "webhooks/drain_sealed",
        target: Some(DRAIN_TARGET),
        per_iteration: Some(DELIVERIES as u64),
        raw_per_iteration: Some(DELIVERIES as u64),
        ours: Box::new(move || {
            rt_ours.block_on(async {
                sealed
                    .get_or_init(|| {
                        Pipeline::start_with(
                            &url_ours,
                            "bench_wh_drain_sealed",
                            Some(sealer()),
                            with_header,
                        )
                    })
                    .await
                    .deliver(DELIVERIES)
                    .await;
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                plain
                    .get_or_init(|| {
                        Pipeline::start_with(&url_raw, "bench_wh_drain_plain", None, with_header)
                    })
                    .await
                    .deliver(DELIVERIES)
                    .await;
            });
        }),
    }
}

/// Webhooks on their own tables in schema `prefix` (nothing delivers from them).
async fn webhooks(url: &str, prefix: &str, sealer: Option<Sealer>) -> Webhooks {
    let db = crate::db::connect(url, 4).await;
    let queue = fresh_queue(&db, prefix, QueueConfig::default()).await;
    let config = WebhookConfig {
        schema: prefix.to_owned(),
        addresses: AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        },
        require_https: false,
        ..WebhookConfig::default()
    };
    let webhooks = check(match sealer {
        Some(sealer) => Webhooks::sealed(&db, queue, config, sealer),
        None => Webhooks::new(&db, queue, config),
    });
    check(webhooks.migrate().await);
    webhooks
}

/// One `create_endpoint` (a generated secret, one custom header, one subscription) with
/// sealing against the same without.
fn create_endpoint_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let (sealed, plain) = rt.block_on(async {
        (
            webhooks(url, "bench_wh_create_sealed", Some(sealer())).await,
            webhooks(url, "bench_wh_create_plain", None).await,
        )
    });
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    let create = |webhooks: Webhooks| async move {
        check(
            webhooks
                .create_endpoint(with_header(
                    NewEndpoint::new("http://127.0.0.1:9/hook").subscribe("*"),
                ))
                .await,
        );
    };
    Pair {
        name: "webhooks/create_endpoint_sealed",
        // The goal is absolute (≤ +50 µs, see `report::absolute_rows`), not a ratio.
        target: None,
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || rt_ours.block_on(create(sealed.clone()))),
        raw: Box::new(move || rt_raw.block_on(create(plain.clone()))),
    }
}

/// The pairs of this module on the server at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    vec![create_endpoint_pair(&rt, url), drain_pair(&rt, url)]
}

/// The pairs of this module, on the bench PostgreSQL.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&crate::db::bench_database_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs run against the test PostgreSQL, and the sealed side stores nothing in the
    /// clear.
    #[test]
    fn the_sealed_webhook_pairs_run() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::postgres());
        crate::run_each_once(pairs_on(test_db.url()));
        let stored: Vec<String> = rt.block_on(async {
            let db = crate::db::connect(test_db.url(), 1).await;
            check(
                sqlx::query_scalar(
                    "SELECT e::text FROM bench_wh_create_sealed.webhook_endpoints e \
                     UNION ALL SELECT e::text FROM bench_wh_drain_sealed.webhook_endpoints e",
                )
                .fetch_all(db.pool())
                .await,
            )
        });
        assert_eq!(stored.len(), 2);
        assert!(
            stored
                .iter()
                .all(|row| row.contains("sealed:") && !row.contains(AUTHORIZATION))
        );
    }
}
