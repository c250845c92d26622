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

#[tokio::test]
async fn pause_and_resume_a_queue_with_the_forms_token() {
    let s = setup().await;
    let app = s.operator();
    let page = get(&app, "/ops/queues").await;
    assert!(page.body.contains("data-paused=\"false\""), "{}", page.body);
    // Without the token nothing happens.
    let refused = post(&app, "/ops/queues/neo_queue/pause", "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(s.queue.pause_status().await.unwrap().is_none());
    let token = csrf(&page.body);
    let paused = post(
        &app,
        "/ops/queues/neo_queue/pause",
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let status = s.queue.pause_status().await.unwrap().unwrap();
    assert_eq!(status.paused_by.as_deref(), Some("operator (console)"));
    let page = get(&app, "/ops/queues").await;
    assert!(page.body.contains("data-paused=\"true\""), "{}", page.body);
    assert!(page.body.contains("/ops/queues/neo_queue/resume"));
    // A paused queue's claims come back empty.
    let mut uow = s.db.begin().await.unwrap();
    s.queue
        .enqueue(
            &mut *uow,
            NewJob::new("while.paused", &1).unwrap(),
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert!(s.queue.claim("t", 10, None).await.unwrap().is_empty());
    let resumed = post(
        &app,
        "/ops/queues/neo_queue/resume",
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER);
    assert!(s.queue.pause_status().await.unwrap().is_none());
    assert_eq!(s.queue.claim("t", 10, None).await.unwrap().len(), 1);
    let unknown = post(&app, "/ops/queues/nope/pause", &format!("csrf={token}")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throughput_chart_counts_jobs_enqueued_and_finished() {
    let s = setup().await;
    let config = ConsoleConfig {
        throughput_sample: std::time::Duration::from_millis(200),
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
    // Let the sampler take its first samples, then enqueue 30 jobs and finish 20.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let jobs: Vec<_> = (0..30)
        .map(|i| NewJob::new("chart.job", &i).unwrap())
        .collect();
    let mut uow = s.db.begin().await.unwrap();
    s.queue
        .enqueue_many(&mut *uow, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let claimed = s.queue.claim("chart", 20, None).await.unwrap();
    assert_eq!(claimed.len(), 20);
    let receipts: Vec<_> = claimed.iter().map(|j| j.receipt()).collect();
    assert!(
        s.queue.ack_many(&receipts).await.unwrap().is_empty(),
        "none refused"
    );
    // PostgreSQL publishes a backend's row counts within about a second of its transaction.
    let started = std::time::Instant::now();
    loop {
        let page = get(&app, "/ops/queues").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("<svg"), "{}", page.body);
        if page.body.contains("data-finished=\"20\"") && page.body.contains("data-enqueued=\"30\"")
        {
            assert!(page.body.contains("class=\"finished\" points=\""));
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the chart never counted 30 enqueued and 20 finished: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_page_compares_top_statements_with_a_baseline_and_lists_lock_waits() {
    use neo_db::diagnostics::{BaselineConfig, QueryBaselines};
    let s = setup().await;
    let mut conn = s.db.statement_connection().await.unwrap();
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let baselines = QueryBaselines::install(&s.db, BaselineConfig::default())
        .await
        .unwrap();
    // A slow statement before and after the capture: it leads the top statements.
    let sleep = async |times: usize| {
        for _ in 0..times {
            let mut conn = s.db.statement_connection().await.unwrap();
            sqlx::query("SELECT pg_sleep(0.05)")
                .persistent(false)
                .execute(&mut *conn)
                .await
                .unwrap();
            conn.finish().await.unwrap();
        }
    };
    sleep(3).await;
    baselines.capture("v1").await.unwrap();
    sleep(2).await;
    let app = s.app(&s.builder().baselines(baselines, "v1").build().unwrap());
    let page = get(&app, "/ops/database").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"statements\""), "{}", page.body);
    assert!(
        page.body.contains("baseline <code>v1</code>"),
        "{}",
        page.body
    );
    let slow = page
        .body
        .split("<tr class=\"statement\"")
        .find(|row| row.contains("pg_sleep"))
        .unwrap_or_else(|| panic!("pg_sleep among the top statements: {}", page.body));
    let slow = &slow[..slow.find("</tr>").unwrap()];
    // 5 calls in all, 3 in the baseline, 2 since; about as slow as before (50 ms).
    assert!(slow.contains("<td class=\"n\">5</td>"), "{slow}");
    assert!(slow.contains("<td class=\"n\">2</td>"), "{slow}");
    assert!(slow.contains("data-regressed=\"false\""), "{slow}");
    assert!(!slow.contains("not in the baseline"), "{slow}");
    // Without a baseline: by mean time.
    let plain = get(&s.operator(), "/ops/database").await;
    assert!(plain.body.contains("By mean time"), "{}", plain.body);

    // A session holding a lock on the jobs table and one waiting for it.
    let mut holder = s.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE neo_queue.jobs IN ACCESS EXCLUSIVE MODE")
        .persistent(false)
        .execute(&mut **holder)
        .await
        .unwrap();
    let db = s.db.clone();
    let waiter = tokio::spawn(async move {
        let mut conn = db.statement_connection().await.unwrap();
        sqlx::query("SELECT count(*) FROM neo_queue.jobs")
            .persistent(false)
            .execute(&mut *conn)
            .await
            .unwrap();
        conn.finish().await.unwrap();
    });
    let started = std::time::Instant::now();
    loop {
        let page = get(&app, "/ops/database").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if page.body.contains("class=\"lock-wait\"") {
            assert!(page.body.contains("neo_queue.jobs"), "{}", page.body);
            assert!(page.body.contains("AccessShareLock"), "{}", page.body);
            assert!(
                page.body.contains("LOCK TABLE neo_queue.jobs"),
                "{}",
                page.body
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no lock wait shown: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    holder.rollback().await.unwrap();
    waiter.await.unwrap();
}
