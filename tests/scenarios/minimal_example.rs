//! `examples/minimal` (neo-db + neo-cache behind axum) on the test servers: it migrates its
//! table, serves a note it stores and one it does not have, reads through its cache, and stops
//! gracefully when asked, finishing with `Ok`.

use neo_commons::cache::CacheConfig;
use neo_commons::db::DbConfig;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn the_minimal_service_serves_notes_through_its_cache_and_stops_gracefully() {
    let pg = neo_testkit::postgres().await;
    let redis = neo_testkit::redis().await;
    let mut cache = CacheConfig::named("notes");
    redis.key_prefix().clone_into(&mut cache.key_prefix);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let redis_url = redis.url().to_owned();
    let running = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        minimal_service::serve(
            listener,
            &DbConfig::with_url(pg.url()),
            cache,
            &redis_url,
            shutdown,
        )
        .await
        .map_err(|e| e.to_string())
    });

    let http = reqwest::Client::new();
    // The listener accepts at once; the first request waits for the migration to finish.
    let created: Value = http
        .post(format!("{base}/notes"))
        .json(&json!("buy milk"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["text"], "buy milk");
    let id = created["id"].as_i64().unwrap();
    for _ in 0..2 {
        let read: Value = http
            .get(format!("{base}/notes/{id}"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read, created);
    }
    let missing = http
        .get(format!("{base}/notes/{}", id + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

    // The note is in the shared tier: another instance's cache finds it without the database.
    let mut config = CacheConfig::named("notes");
    redis.key_prefix().clone_into(&mut config.key_prefix);
    let other =
        neo_commons::cache::HybridCache::<minimal_service::Note>::redis(config, redis.url())
            .unwrap();
    let cached = neo_commons::cache::Cache::get(&other, &id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.text, "buy milk");

    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    stopped
        .expect("the service did not stop within 10 s")
        .unwrap()
        .unwrap();
    println!("served note {id}, read it twice through the cache, stopped cleanly");
}
