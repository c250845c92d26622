//! A tenant's console sees and acts on its own endpoints and deliveries only.

use crate::common::{csrf, get, post, setup};
use axum::http::StatusCode;
use neo_core::TenantId;
use neo_events::{DeliveryStatus, NewEndpoint};

#[tokio::test]
async fn tenant_a_cannot_see_or_act_on_tenant_b() {
    let s = setup().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    let ea = s
        .endpoint(
            NewEndpoint::new("http://127.0.0.1:9/a")
                .tenant(a)
                .description("endpoint of A"),
        )
        .await;
    let eb = s
        .endpoint(
            NewEndpoint::new("http://127.0.0.1:9/b")
                .tenant(b)
                .description("endpoint of B"),
        )
        .await;
    s.fan_out(serde_json::json!({ "who": "a" }), Some(a)).await;
    s.fan_out(serde_json::json!({ "who": "b-private" }), Some(b))
        .await;
    let mut conn = s.db.statement_connection().await.unwrap();
    sqlx::query("UPDATE neo_events.webhook_deliveries SET status = 'dead'")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let da = s
        .webhooks
        .deliveries(ea.id, None, 10)
        .await
        .unwrap()
        .remove(0);
    let db_ = s
        .webhooks
        .deliveries(eb.id, None, 10)
        .await
        .unwrap()
        .remove(0);

    let console_a = s.builder().tenant(a).build().unwrap();
    let app = s.app(&console_a);
    let list = get(&app, "/ops/webhooks").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("endpoint of A") && !list.body.contains("endpoint of B"));
    assert!(!list.body.contains(&eb.id.to_string()));
    // Its own pages work; B's are not found.
    assert_eq!(
        get(&app, &format!("/ops/webhooks/{}", ea.id)).await.status,
        StatusCode::OK
    );
    let own = get(&app, &format!("/ops/deliveries/{}", da.id)).await;
    assert_eq!(own.status, StatusCode::OK);
    let token = csrf(&own.body);
    assert_eq!(
        get(&app, &format!("/ops/webhooks/{}", eb.id)).await.status,
        StatusCode::NOT_FOUND
    );
    let theirs = get(&app, &format!("/ops/deliveries/{}", db_.id)).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert!(!theirs.body.contains("b-private"));
    // No action on B's data goes through, even with a valid CSRF token.
    for (path, form) in [
        (
            format!("/ops/deliveries/{}/replay", db_.id),
            format!("csrf={token}"),
        ),
        (
            format!("/ops/webhooks/{}/enabled", eb.id),
            format!("csrf={token}&enabled=false"),
        ),
        (
            format!("/ops/webhooks/{}/rotate", eb.id),
            format!("csrf={token}"),
        ),
        (
            format!("/ops/webhooks/{}/recover", eb.id),
            format!("csrf={token}&since=2000-01-01T00:00"),
        ),
    ] {
        let answer = post(&app, &path, &form).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
    }
    let b_now = s.webhooks.endpoint(eb.id).await.unwrap();
    assert!(b_now.enabled);
    assert_eq!(b_now.secret().expose(), eb.secret().expose());
    assert_eq!(
        s.webhooks.delivery(db_.id).await.unwrap().status,
        DeliveryStatus::Dead
    );
    // Operator pages are not part of a tenant's console.
    for path in ["/ops/outbox", "/ops/cache", "/ops/database"] {
        assert_eq!(
            get(&app, path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Its own dead delivery replays.
    let replay = post(
        &app,
        &format!("/ops/deliveries/{}/replay", da.id),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER, "{}", replay.body);
    assert_eq!(
        s.webhooks.delivery(da.id).await.unwrap().status,
        DeliveryStatus::Pending
    );
    // B's console sees B's and not A's.
    let console_b = s.builder().tenant(b).build().unwrap();
    let list_b = get(&s.app(&console_b), "/ops/webhooks").await;
    assert!(list_b.body.contains("endpoint of B") && !list_b.body.contains("endpoint of A"));
}

/// Enqueues `n` jobs of `tenant` and sends them straight to the dead letters.
async fn dead_jobs_of(
    queue: &neo_queue::Queue,
    tenant: TenantId,
    kind: &str,
    n: usize,
) -> Vec<neo_core::JobId> {
    use neo_queue::{Failure, NewJob, OnDuplicate};
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            NewJob::new(kind, &serde_json::json!({ "i": i }))
                .unwrap()
                .max_attempts(1)
                .tenant_id(tenant)
        })
        .collect();
    let ids: Vec<_> = jobs.iter().map(NewJob::id).collect();
    let db = queue.db().clone();
    let mut uow = db.begin().await.unwrap();
    queue
        .enqueue_many(&mut *uow, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let claimed = queue.claim("console-test", 100, None).await.unwrap();
    let failures: Vec<_> = claimed
        .iter()
        .filter(|j| ids.contains(&j.id))
        .map(|j| Failure::permanent(j.receipt(), "boom"))
        .collect();
    assert_eq!(failures.len(), n);
    queue.nack_many(&failures).await.unwrap();
    ids
}

#[tokio::test]
async fn a_tenant_sees_and_acts_on_its_own_jobs_only() {
    let s = setup().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    let of_a = dead_jobs_of(&s.queue, a, "report.of_a", 2).await;
    let of_b = dead_jobs_of(&s.queue, b, "report.of_b_private", 3).await;
    // One available job of B's, none of A's.
    let mut uow = s.db.begin().await.unwrap();
    s.queue
        .enqueue(
            &mut *uow,
            neo_queue::NewJob::new("later.of_b", &1)
                .unwrap()
                .tenant_id(b),
            neo_queue::OnDuplicate::Skip,
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let app = s.app(&s.builder().tenant(a).build().unwrap());
    let page = get(&app, "/ops/queues").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // A's counts: 0 available, 0 running, 2 dead; B's jobs are not counted or listed.
    assert!(
        page.body
            .contains("<td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n bad\">2</td>"),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("class=\"dead-job\"").count(), 2);
    assert!(page.body.contains("report.of_a") && !page.body.contains("report.of_b_private"));
    for id in &of_b {
        assert!(!page.body.contains(&id.to_string()));
    }
    // No pause button in a tenant's console, and pausing is not found.
    assert!(!page.body.contains("/pause"), "{}", page.body);
    let token = csrf(&page.body);
    for what in ["pause", "resume"] {
        let answer = post(
            &app,
            &format!("/ops/queues/neo_queue/{what}"),
            &format!("csrf={token}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{what}");
    }
    assert!(s.queue.pause_status().await.unwrap().is_none());
    // Retrying or discarding B's dead letters from A's console: not found, nothing changes.
    for what in ["retry", "discard"] {
        let answer = post(
            &app,
            &format!("/ops/queues/neo_queue/{what}"),
            &format!("csrf={token}&ids={}", of_b[0]),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{what}: {}",
            answer.body
        );
    }
    assert_eq!(s.queue.get(of_b[0]).await.unwrap().unwrap().state, "dead");
    // Its own retry goes through.
    let retry = post(
        &app,
        "/ops/queues/neo_queue/retry",
        &format!("csrf={token}&ids={}", of_a[0]),
    )
    .await;
    assert_eq!(retry.status, StatusCode::SEE_OTHER, "{}", retry.body);
    assert_eq!(
        s.queue.get(of_a[0]).await.unwrap().unwrap().state,
        "available"
    );
    // B's console sees B's: 1 available, 3 dead.
    let page_b = get(
        &s.app(&s.builder().tenant(b).build().unwrap()),
        "/ops/queues",
    )
    .await;
    assert!(
        page_b
            .body
            .contains("<td class=\"n\">1</td><td class=\"n\">0</td><td class=\"n bad\">3</td>"),
        "{}",
        page_b.body
    );
    assert!(!page_b.body.contains("report.of_a"));
}
