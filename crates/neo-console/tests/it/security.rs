//! Every request is authorized, every action carries the CSRF token, every value is escaped.

use crate::common::{call, csrf, get, post, setup};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use neo_events::NewEndpoint;

#[tokio::test]
async fn without_a_token_every_page_and_action_is_401() {
    let s = setup().await;
    let app = s.operator();
    for path in [
        "/ops",
        "/ops/queues",
        "/ops/webhooks",
        "/ops/outbox",
        "/ops/cache",
        "/ops/database",
    ] {
        let answer = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
    }
    let wrong = call(
        &app,
        Request::get("/ops/queues")
            .header(
                header::AUTHORIZATION,
                "Bearer console-test-token-0123456788",
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let action = call(
        &app,
        Request::post("/ops/queues/neo_queue/retry")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("ids=x"))
            .unwrap(),
    )
    .await;
    assert_eq!(action.status, StatusCode::UNAUTHORIZED);
    // The token signs in through the login form: the cookie then lets the browser in.
    let login = call(
        &app,
        Request::post("/ops/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={}", crate::common::TOKEN)))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let cookie = login
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = call(
        &app,
        Request::get("/ops/queues")
            .header(header::COOKIE, pair)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let bad_login = call(
        &app,
        Request::post("/ops/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("token=guess"))
            .unwrap(),
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_action_without_the_right_csrf_token_is_403_and_changes_nothing() {
    let s = setup().await;
    let app = s.operator();
    let endpoint = s
        .endpoint(NewEndpoint::new("http://127.0.0.1:9/hook"))
        .await;
    let path = format!("/ops/webhooks/{}/enabled", endpoint.id);
    for form in [
        "enabled=false",
        "enabled=false&csrf=",
        "enabled=false&csrf=00ff",
    ] {
        let answer = post(&app, &path, form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form}");
        assert!(answer.body.contains("CSRF"), "{}", answer.body);
    }
    // A token from another console's key is refused too.
    let other = s.builder().key(vec![9; 32]).build().unwrap();
    let other_page = get(&s.app(&other), &format!("/ops/webhooks/{}", endpoint.id)).await;
    let foreign = csrf(&other_page.body);
    let answer = post(&app, &path, &format!("enabled=false&csrf={foreign}")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(s.webhooks.endpoint(endpoint.id).await.unwrap().enabled);
    // With the page's own token the action goes through.
    let page = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    let token = csrf(&page.body);
    let answer = post(
        &app,
        &path,
        &format!("enabled=false&reason=maintenance&csrf={token}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let stored = s.webhooks.endpoint(endpoint.id).await.unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.disabled_reason.as_deref(), Some("maintenance"));
    // GET never acts.
    let answer = get(&app, "/ops/deliveries/1/replay").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

const SCRIPT: &str = "<script>alert('x')</script>";

#[tokio::test]
async fn a_payload_and_a_description_with_script_tags_render_escaped() {
    let s = setup().await;
    let app = s.operator();
    let endpoint = s
        .endpoint(
            NewEndpoint::new("http://127.0.0.1:9/hook")
                .description(SCRIPT)
                .header("x-api-key", "header-secret-value"),
        )
        .await;
    s.fan_out(serde_json::json!({ "name": SCRIPT }), None).await;
    let list = get(&app, "/ops/webhooks").await;
    assert_eq!(list.status, StatusCode::OK);
    let one = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    assert_eq!(one.status, StatusCode::OK);
    let delivery = s
        .webhooks
        .deliveries(endpoint.id, None, 10)
        .await
        .unwrap()
        .remove(0);
    let detail = get(&app, &format!("/ops/deliveries/{}", delivery.id)).await;
    assert_eq!(detail.status, StatusCode::OK);
    for page in [&list, &one] {
        assert!(
            page.body
                .contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
            "{}",
            page.body
        );
    }
    assert!(
        detail
            .body
            .contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{}",
        detail.body
    );
    for page in [&list, &one, &detail] {
        assert!(!page.body.contains("<script"), "unescaped: {}", page.body);
        assert!(
            !page.body.contains(endpoint.secret().expose().as_str()),
            "secret shown"
        );
        assert!(
            !page.body.contains("header-secret-value"),
            "header value shown"
        );
        let csp = page
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(page.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    }
    // The secret shows once: in the answer to the rotation, and on no page after it.
    let token = csrf(&one.body);
    let rotated = post(
        &app,
        &format!("/ops/webhooks/{}/rotate", endpoint.id),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let stored = s.webhooks.endpoint(endpoint.id).await.unwrap();
    let new_secret = stored.secret().expose();
    assert_ne!(new_secret, endpoint.secret().expose());
    assert!(rotated.body.contains(new_secret.as_str()));
    let again = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    assert!(!again.body.contains(new_secret.as_str()));
}

#[tokio::test]
async fn script_tags_in_jobs_attempts_and_statements_render_escaped_on_the_new_pages() {
    use neo_queue::{Failure, NewJob, OnDuplicate};
    let s = setup().await;
    let tenant = neo_core::TenantId::new();
    // A dead job whose payload and error carry a script (a kind cannot).
    let mut uow = s.db.begin().await.unwrap();
    s.queue
        .enqueue(
            &mut *uow,
            NewJob::new("report.build", &serde_json::json!({ "name": SCRIPT }))
                .unwrap()
                .max_attempts(1)
                .tenant_id(tenant),
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let job = s.queue.claim("t", 1, None).await.unwrap().remove(0);
    s.queue
        .nack_many(&[Failure::permanent(job.receipt(), SCRIPT)])
        .await
        .unwrap();
    // A delivery with an attempt whose answer and error carry a script.
    let endpoint = s
        .endpoint(NewEndpoint::new("http://127.0.0.1:9/hook"))
        .await;
    s.fan_out(serde_json::json!({ "n": 1 }), None).await;
    let delivery = s
        .webhooks
        .deliveries(endpoint.id, None, 1)
        .await
        .unwrap()
        .remove(0);
    let mut conn = s.db.statement_connection().await.unwrap();
    sqlx::query(
        "INSERT INTO neo_events.webhook_delivery_attempts \
         (delivery_id, slot, attempt, endpoint_id, outcome, response_status, response_excerpt, duration_ms, error) \
         VALUES ($1, 1, 1, $2, 'dead', 500, $3, 12, $3)",
    )
    .persistent(false)
    .bind(delivery.id)
    .bind(endpoint.id)
    .bind(SCRIPT)
    .execute(&mut *conn)
    .await
    .unwrap();
    // A statement whose text (kept by pg_stat_statements with its comment) carries a script.
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("SELECT pg_sleep(0.2) /* <script>alert('x')</script> */")
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();

    let app = s.operator();
    let tenant_app = s.app(&s.builder().tenant(tenant).build().unwrap());
    let pages = [
        get(&app, "/ops/queues").await,
        get(&tenant_app, "/ops/queues").await,
        get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await,
        get(&app, &format!("/ops/deliveries/{}", delivery.id)).await,
        get(&app, "/ops/database").await,
    ];
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body
                .contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("<script"), "unescaped: {}", page.body);
        let csp = page
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
    }
}
