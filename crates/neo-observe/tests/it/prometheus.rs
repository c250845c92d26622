//! `/metrics` mounted on a user's router serves an exposition a strict parser accepts, with
//! the catalogue's help text and the sampler's gauges.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use neo_observe::prometheus::{PrometheusConfig, mount, recorder};
use neo_observe::{ObserveConfig, Sampler};
use neo_testkit::parse_exposition;
use tower::ServiceExt;

#[tokio::test]
async fn the_mounted_route_serves_a_valid_exposition_of_catalogued_metrics() {
    let s = crate::sampler::setup().await;
    let recorder = recorder(&PrometheusConfig::default()).unwrap();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    neo_observe::catalogue::describe_all();
    let user_router: axum::Router =
        axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
    let app = mount(user_router, handle);

    let jobs: Vec<_> = (0..4)
        .map(|i| neo_queue::NewJob::new("k", &i).unwrap())
        .collect();
    s.queue
        .enqueue_many(&s.db, jobs, neo_queue::OnDuplicate::Error)
        .await
        .unwrap();
    Sampler::new(&s.db, ObserveConfig::default(), "prom")
        .unwrap()
        .sample()
        .await
        .unwrap();

    let hello = app
        .clone()
        .oneshot(Request::get("/hello").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        hello.status(),
        StatusCode::OK,
        "the user's routes still answer"
    );
    let response = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let catalogue = neo_observe::catalogue::all();
    for (name, family) in &families {
        let def = catalogue
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} exported but not catalogued"));
        assert_eq!(family.kind, def.kind.as_str(), "{name}");
        assert_eq!(family.help.as_deref(), Some(def.help), "{name}");
    }
    let depth = &families["neo_queue_depth_jobs"];
    let available = depth
        .samples
        .iter()
        .find(|s| s.labels.contains(&("state".into(), "available".into())))
        .unwrap();
    assert_eq!(available.value, 4.0);
    assert_eq!(
        available.labels,
        vec![
            ("queue".into(), "neo_queue".into()),
            ("state".into(), "available".into())
        ]
    );
    assert_eq!(families["neo_queue_enqueued_total"].samples[0].value, 4.0);
    assert_eq!(families["neo_observe_leader"].samples[0].value, 1.0);
    let acquire = &families["neo_db_pool_acquire_seconds"];
    assert_eq!(acquire.kind, "histogram");
    assert!(
        acquire
            .samples
            .iter()
            .any(|s| s.name == "neo_db_pool_acquire_seconds_bucket")
    );
}
