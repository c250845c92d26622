//! The example service serves `GET /metrics` beside its API: after a create and two reads,
//! a scrape parses strictly, every family is catalogued, and the sampler's gauges, the cache,
//! database and queue metrics are there.

use neo_commons::observe::prometheus::{PrometheusConfig, install};
use neo_testkit::{PgServer, RedisServer, parse_exposition};
use orgs_service::{Roles, Service, ServiceConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_serves_a_valid_metrics_exposition() {
    // One global recorder per process (nextest runs each test in its own).
    let handle = install(&PrometheusConfig::default()).unwrap();
    let pg = PgServer::start().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut config = ServiceConfig::new(pg.url(), redis.url());
    config.observe.interval = Duration::from_millis(200);
    config.observe.lease_ttl = Duration::from_secs(2);
    let service = Service::compose(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let runner = service.clone();
    let roles = Roles::all(listener).with_metrics(handle);
    let running = tokio::spawn(async move { runner.run(roles, stopped).await.unwrap() });

    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/organizations"))
        .json(&json!({ "name": "Metrics Inc", "slug": "metrics-inc" }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    for _ in 0..2 {
        http.get(format!("{base}/organizations/{id}"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    // Scrape until the sampler has finished a sample as leader (it ticks every 200 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let families = loop {
        let response = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let sampled = families
            .get("neo_observe_leader")
            .is_some_and(|f| f.samples.iter().any(|s| s.value == 1.0))
            && families.contains_key("neo_events_outbox_lag_seconds")
            // A whole leader sample has finished (the counter moves after its last gauge).
            && families.get("neo_observe_samples_total").is_some_and(|f| {
                f.samples
                    .iter()
                    .any(|s| s.labels.contains(&("scope".into(), "leader".into()))
                        && s.labels.contains(&("outcome".into(), "ok".into())) && s.value >= 1.0)
            });
        if sampled {
            break families;
        }
        assert!(Instant::now() < deadline, "the sampler never led:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.send_replace(true);
    running.await.unwrap();

    let catalogue = neo_commons::observe::catalogue::all();
    for (name, family) in &families {
        let def = catalogue
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} exported but not catalogued"));
        assert_eq!(family.kind, def.kind.as_str(), "{name}");
    }
    for name in [
        "neo_db_pool_acquire_seconds",
        "neo_db_pool_connections",
        "neo_cache_hits_total",
        "neo_cache_hit_ratio",
        "neo_cache_l1_entries",
        "neo_queue_depth_jobs",
        "neo_observe_samples_total",
        "neo_events_outbox_pending_events",
        "neo_db_lock_waits_sessions",
    ] {
        assert!(
            families.contains_key(name),
            "{name} missing from the scrape"
        );
    }
    let entries = &families["neo_cache_l1_entries"].samples[0];
    assert_eq!(
        entries.labels,
        vec![("cache".into(), "organizations".into())]
    );
}
