//! The webhook curve: deliveries per second through the whole pipeline (outbox → fan-out →
//! neo-queue → signed POST to a local receiver) with E endpoints, every one subscribed to
//! every event, FIFO and rate-limited, against the rate with the fewest endpoints.

use super::{Curve, Options, Point, Target};
use crate::check;
use crate::events::Pipeline;
use neo_events::{DomainEvent, NewEndpoint};
use std::time::{Duration, Instant};

/// The endpoint count every curve point is compared with (or fewer on a tiny run).
pub const BASE_ENDPOINTS: u64 = 10;
/// Endpoints per size: E = size / 100 (10k endpoints at 1M rows).
pub const ROWS_PER_ENDPOINT: u64 = 100;
/// Each endpoint's rate limit, deliveries per second: above what one FIFO endpoint reaches
/// here, so it is checked on every delivery without holding the run back.
pub const RATE_LIMIT: u32 = 1_000;
/// Endpoints created at once.
const CREATE_CONCURRENCY: usize = 16;

/// The endpoint counts of a run: 10 and size / 100 for each size (at least 1).
pub fn endpoint_counts(sizes: &[u64]) -> Vec<u64> {
    let mut counts: Vec<u64> = sizes
        .iter()
        .map(|s| (s / ROWS_PER_ENDPOINT).max(1))
        .collect();
    counts.push(BASE_ENDPOINTS);
    counts.sort_unstable();
    counts.dedup();
    counts
}

fn event(n: usize) -> DomainEvent {
    check(DomainEvent::new(
        "organization.updated",
        "organization",
        &format!("org_{n}"),
        &serde_json::json!({ "n": n, "name": "Organization number n", "plan": "growth" }),
    ))
}

/// Deliveries per second with `endpoints` endpoints and at least `deliveries` deliveries
/// (two events at least, each to every endpoint).
async fn deliveries_per_second(url: &str, endpoints: u64, deliveries: usize) -> f64 {
    let limited = |e: NewEndpoint| e.fifo(true).rate_limit(RATE_LIMIT);
    let pipeline = Pipeline::start_with(url, "curves_hooks", None, limited).await;
    // Connections and statements warm, on the first endpoint alone.
    pipeline.deliver(20).await;
    let mut created = tokio::task::JoinSet::new();
    for n in 1..endpoints {
        if created.len() >= CREATE_CONCURRENCY
            && let Some(done) = created.join_next().await
        {
            check(check(done));
        }
        let webhooks = pipeline.webhooks.clone();
        let endpoint =
            limited(NewEndpoint::new(pipeline.receiver.url(&format!("/hook/{n}"))).subscribe("*"));
        created.spawn(async move { webhooks.create_endpoint(endpoint).await });
    }
    while let Some(done) = created.join_next().await {
        check(check(done));
    }
    let endpoints = endpoints as usize;
    let events = deliveries.div_ceil(endpoints).max(2);
    let total = events * endpoints;
    let before = pipeline.receiver.requests().len();
    let started = Instant::now();
    for first in (0..events).step_by(500) {
        let batch: Vec<DomainEvent> = (first..(first + 500).min(events)).map(event).collect();
        pipeline.publish(&batch).await;
    }
    let got = pipeline
        .receiver
        .wait_for(before + total, Duration::from_secs(600))
        .await;
    assert!(
        got.len() >= before + total,
        "{} of {total} deliveries arrived",
        got.len() - before
    );
    let took = got
        .iter()
        .skip(before)
        .map(|r| r.at.saturating_duration_since(started))
        .max()
        .unwrap_or_else(|| started.elapsed());
    pipeline.stop().await;
    total as f64 / took.as_secs_f64().max(1e-9)
}

/// `webhooks/deliveries_per_second` at the endpoint counts of [`endpoint_counts`]; target:
/// every rate ≥ 0.8× the rate with the fewest endpoints.
pub fn delivery_curve(url: &str, options: &Options) -> Curve {
    let rt = crate::runtime();
    let points = endpoint_counts(&options.sizes)
        .into_iter()
        .map(|endpoints| Point {
            size: endpoints,
            value: rt.block_on(deliveries_per_second(url, endpoints, options.deliveries)),
        })
        .collect();
    Curve {
        name: "webhooks/deliveries_per_second",
        size_of: "endpoints",
        unit: "deliveries/s",
        target: Target::RatioAtLeast(0.8),
        points,
    }
}
