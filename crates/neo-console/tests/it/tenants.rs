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
    sqlx::query("UPDATE neo_events.webhook_deliveries SET status = 'dead'")
        .execute(s.db.pool())
        .await
        .unwrap();
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
    for path in ["/ops/queues", "/ops/outbox", "/ops/cache", "/ops/database"] {
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
