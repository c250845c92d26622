//! Each page against real rows: counts, dead letters with retry and discard, keyset pages.

use crate::common::{csrf, get, post, setup};
use axum::http::StatusCode;
use neo_console::ConsoleConfig;
use neo_events::{DeliveryStatus, NewEndpoint};
use neo_queue::{Failure, NewJob, OnDuplicate};

/// Enqueues `n` jobs of `kind` and sends them straight to the dead letters.
pub(crate) async fn dead_jobs(
    queue: &neo_queue::Queue,
    kind: &str,
    n: usize,
) -> Vec<neo_core::JobId> {
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            NewJob::new(kind, &serde_json::json!({ "i": i }))
                .unwrap()
                .max_attempts(1)
        })
        .collect();
    let db = queue.db().clone();
    let mut uow = db.begin().await.unwrap();
    queue
        .enqueue_many(&mut *uow, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let claimed = queue.claim("console-test", n, None).await.unwrap();
    assert_eq!(claimed.len(), n);
    let failures: Vec<_> = claimed
        .iter()
        .map(|j| Failure::permanent(j.receipt(), format!("boom <b>{}</b>", j.id)))
        .collect();
    queue.nack_many(&failures).await.unwrap();
    claimed.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn every_operator_page_renders_real_rows() {
    let s = setup().await;
    let app = s.operator();
    dead_jobs(&s.queue, "invoice.send", 3).await;
    let endpoint = s
        .endpoint(NewEndpoint::new("http://127.0.0.1:9/hook").description("billing"))
        .await;
    s.fan_out(serde_json::json!({ "n": 1 }), None).await;
    let mut uow = s.db.begin().await.unwrap();
    let event =
        neo_events::DomainEvent::new("organization.created", "organization", "org_2", &1).unwrap();
    s.outbox.publish(&mut *uow, &event).await.unwrap();
    uow.commit().await.unwrap();

    let overview = get(&app, "/ops").await;
    assert_eq!(overview.status, StatusCode::OK);
    let queues = get(&app, "/ops/queues").await;
    assert_eq!(queues.status, StatusCode::OK, "{}", queues.body);
    assert!(queues.body.contains("invoice.send"));
    assert_eq!(queues.body.matches("class=\"dead-job\"").count(), 3);
    assert!(queues.body.contains("boom &lt;b&gt;"));
    assert!(queues.body.contains("1 / 1"), "attempts shown");
    let webhooks = get(&app, "/ops/webhooks").await;
    assert!(webhooks.body.contains(&endpoint.id.to_string()) && webhooks.body.contains("billing"));
    let one = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    assert_eq!(
        one.body.matches("class=\"delivery\"").count(),
        1,
        "{}",
        one.body
    );
    let outbox = get(&app, "/ops/outbox").await;
    assert_eq!(outbox.status, StatusCode::OK, "{}", outbox.body);
    assert!(outbox.body.contains("neo_events"));
    let cache = get(&app, "/ops/cache").await;
    assert_eq!(cache.status, StatusCode::OK);
    let database = get(&app, "/ops/database").await;
    assert_eq!(database.status, StatusCode::OK, "{}", database.body);
    assert!(database.body.contains("id=\"pool\""));
    let dead_only = get(&app, &format!("/ops/webhooks/{}?status=dead", endpoint.id)).await;
    assert_eq!(dead_only.body.matches("class=\"delivery\"").count(), 0);
    let bad = get(&app, &format!("/ops/webhooks/{}?status=lost", endpoint.id)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let tampered = get(&app, "/ops/queues?after=abc").await;
    assert_eq!(tampered.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dead_letters_page_by_keyset_and_retry_or_discard_many() {
    let s = setup().await;
    let console = s.builder().build().unwrap();
    let _ = console;
    let config = ConsoleConfig {
        page_size: 2,
        ..ConsoleConfig::default()
    };
    let auth = neo_console::BearerToken::new(crate::common::TOKEN.to_owned().into(), "neo_console")
        .unwrap();
    let console = neo_console::Console::builder(config, auth)
        .key(crate::common::KEY.to_vec())
        .db(&s.db, neo_observe::ObserveConfig::default())
        .queue(s.queue.clone())
        .build()
        .unwrap();
    let app = s.app(&console);
    let ids = dead_jobs(&s.queue, "report.build", 5).await;
    // Five dead letters, two a page: three pages, each after the last.
    let mut seen = Vec::new();
    let mut path = "/ops/queues?queue=neo_queue".to_owned();
    loop {
        let page = get(&app, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for id in &ids {
            if page.body.contains(&format!("data-job=\"{id}\"")) {
                seen.push(*id);
            }
        }
        let Some(at) = page.body.find("id=\"next\" href=\"") else {
            break;
        };
        let rest = &page.body[at + "id=\"next\" href=\"".len()..];
        path = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    }
    seen.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(seen, all, "every dead letter once over the pages");

    let page = get(&app, "/ops/queues").await;
    let token = csrf(&page.body);
    let retry = post(
        &app,
        "/ops/queues/neo_queue/retry",
        &format!("csrf={token}&ids={}&ids={}", ids[0], ids[1]),
    )
    .await;
    assert_eq!(retry.status, StatusCode::SEE_OTHER, "{}", retry.body);
    let discard = post(
        &app,
        "/ops/queues/neo_queue/discard",
        &format!("csrf={token}&ids={}", ids[2]),
    )
    .await;
    assert_eq!(discard.status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.queue.get(ids[0]).await.unwrap().unwrap().state,
        "available"
    );
    assert_eq!(
        s.queue.get(ids[1]).await.unwrap().unwrap().state,
        "available"
    );
    assert!(s.queue.get(ids[2]).await.unwrap().is_none(), "discarded");
    assert_eq!(s.queue.get(ids[3]).await.unwrap().unwrap().state, "dead");
    let none = post(
        &app,
        "/ops/queues/neo_queue/retry",
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    let unknown = post(
        &app,
        "/ops/queues/nope/retry",
        &format!("csrf={token}&ids={}", ids[3]),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let _ = DeliveryStatus::Dead;
}
