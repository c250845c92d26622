//! Trace context across the outbox: an event published inside a traced request span carries
//! its context through the outbox, the dispatch round and the delivery job; the dispatch span
//! and each delivery span link to it; a delivery sends it as `traceparent`/`tracestate` only
//! when `send_trace_context` is on.

use crate::webhooks::{
    Running, config, event, finish, publish, receiver_and_endpoint, setup, worker_path,
};
use neo_core::TraceContext;
use neo_events::WebhookConfig;
use neo_testkit::{PgRoute, TraceCapture};
use std::time::{Duration, Instant};

/// A request's context with a trace id of its own.
fn request_context() -> TraceContext {
    let id = uuid::Uuid::now_v7();
    let span: [u8; 8] = id.as_bytes()[8..].try_into().unwrap();
    TraceContext::new(*id.as_bytes(), span, true)
        .unwrap()
        .with_tracestate("neo=test,other=x")
        .unwrap()
}

fn request_span(request: &TraceContext) -> tracing::Span {
    tracing::info_span!(
        "request",
        traceparent = %request,
        tracestate = request.tracestate().unwrap()
    )
}

/// Waits until `count` spans named `name` link to `trace_id`.
async fn linked(
    capture: &TraceCapture,
    name: &str,
    trace_id: [u8; 16],
    count: usize,
) -> Vec<neo_testkit::CapturedSpan> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = capture.linked_to(name, trace_id);
        if spans.len() >= count {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} {name} spans linked: {spans:?}",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_published_event_links_its_dispatch_and_deliveries_and_sends_its_traceparent(
    route: PgRoute,
) {
    let capture = TraceCapture::install();
    // Through the delivery jobs, whose spans are checked (the inline path is the test below).
    let s = setup(
        route,
        worker_path(WebhookConfig {
            send_trace_context: true,
            ..config(&[100])
        }),
    )
    .await;
    let (receiver, _endpoint) = receiver_and_endpoint(&s, |e| e).await;
    let request = request_context();
    let span = request_span(&request);
    // One event through `publish_many` (UNNEST), one through `publish_cte` (JSON), both made
    // inside the request span; one made outside any span.
    let (by_unnest, by_cte) = span.in_scope(|| {
        (
            event("organization.created", 1),
            event("organization.updated", 2),
        )
    });
    assert_eq!(by_unnest.trace_context(), Some(&request));
    let untraced = event("organization.deleted", 3);
    assert_eq!(untraced.trace_context(), None);
    publish(&s, &[by_unnest, untraced]).await;
    let sql = format!("WITH {} SELECT 1", s.outbox.publish_cte(1));
    let (events, channel) = s.outbox.publish_params([&by_cte]);
    // Unnamed statements in a transaction behind PgBouncer: outside one, sqlx's Parse and
    // Bind (two Syncs) may reach different server sessions ("unnamed prepared statement
    // does not exist").
    let mut conn = s.db.statement_connection().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(events)
        .bind(channel)
        .execute(&mut *conn)
        .await
        .unwrap();
    // Stored with the events, in the column outbox migration 3 added.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM neo_events.outbox WHERE trace_context->>'traceparent' = $1 \
         AND trace_context->>'tracestate' = $2",
    )
    .persistent(false)
    .bind(request.traceparent())
    .bind(request.tracestate())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();
    assert_eq!(stored, 2);

    // The webhook dispatcher (`Webhooks::dispatch`) and a worker.
    let mut running = Running::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (outbox, webhooks) = (s.outbox.clone(), s.webhooks.clone());
    let dispatcher = tokio::spawn(async move {
        webhooks
            .dispatch(&outbox, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    running.worker(&s);
    let requests = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 3);

    let header = request.traceparent();
    let mut traced = 0;
    for r in &requests {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if body["type"] == "organization.deleted" {
            assert_eq!(
                r.header("traceparent"),
                None,
                "an untraced event sends none"
            );
            assert_eq!(r.header("tracestate"), None);
        } else {
            traced += 1;
            assert_eq!(r.header("traceparent"), Some(header.as_str()));
            assert_eq!(r.header("tracestate"), Some("neo=test,other=x"));
        }
    }
    assert_eq!(traced, 2);

    // Each delivery runs in a span linked to the request; so do the jobs that carried them,
    // and the dispatch round(s) that claimed the events.
    let deliveries = linked(
        &capture,
        "neo_events.webhook.delivery",
        request.trace_id(),
        2,
    )
    .await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for d in &deliveries {
        assert_eq!(d.links, vec![request.clone()]);
        assert_eq!(d.field("link.traceparent"), Some(header.as_str()));
    }
    let jobs = linked(&capture, "neo_queue.job", request.trace_id(), 2).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let rounds = linked(
        &capture,
        "neo_events.webhook.dispatch",
        request.trace_id(),
        1,
    )
    .await;
    let links: usize = rounds
        .iter()
        .map(|r| r.links.iter().filter(|l| **l == request).count())
        .sum();
    assert_eq!(links, 2, "each traced event linked once: {rounds:?}");
    // The untraced event's delivery is linked to nothing.
    let unlinked = capture
        .spans_named("neo_events.webhook.delivery")
        .into_iter()
        .filter(|d| d.links.is_empty())
        .count();
    assert!(unlinked >= 1);

    stop.send(()).unwrap();
    assert_eq!(dispatcher.await.unwrap(), 3);
    finish(running, &s, receiver).await;
}

async fn the_header_is_not_sent_unless_enabled_and_inline_attempts_link_too(route: PgRoute) {
    let capture = TraceCapture::install();
    let s = setup(
        route,
        WebhookConfig {
            inline_attempts: 1,
            ..config(&[100])
        },
    )
    .await;
    assert!(!s.webhooks.config().send_trace_context, "off by default");
    let (receiver, _endpoint) = receiver_and_endpoint(&s, |e| e).await;
    let request = request_context();
    let traced = request_span(&request).in_scope(|| event("organization.created", 1));
    publish(&s, &[traced]).await;
    // `Outbox::run` with `fan_out` as its handler; the fan-out's inline first attempt
    // delivers.
    let running = Running::start(&s);
    let requests = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("traceparent"), None);
    assert_eq!(requests[0].header("tracestate"), None);

    let deliveries = linked(
        &capture,
        "neo_events.webhook.delivery",
        request.trace_id(),
        1,
    )
    .await;
    assert_eq!(deliveries[0].links, vec![request.clone()]);
    assert_eq!(deliveries[0].field("delivery.attempt"), Some("1"));
    let rounds = linked(
        &capture,
        "neo_events.outbox.dispatch",
        request.trace_id(),
        1,
    )
    .await;
    assert_eq!(rounds[0].field("links"), Some("1"));
    finish(running, &s, receiver).await;
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail's closure signature is not ours"
)]
fn sending_the_trace_context_is_a_setting_off_by_default() {
    assert!(!WebhookConfig::default().send_trace_context);
    let from_json: WebhookConfig =
        serde_json::from_value(serde_json::json!({ "send_trace_context": true })).unwrap();
    assert!(from_json.send_trace_context);
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_WEBHOOKS_SEND_TRACE_CONTEXT", "true");
        let config: WebhookConfig = neo_core::config::from_env("NEO_WEBHOOKS_").unwrap();
        assert!(config.send_trace_context);
        assert_eq!(
            WebhookConfig {
                send_trace_context: false,
                ..config
            },
            WebhookConfig::default()
        );
        Ok(())
    });
}

neo_testkit::over_routes!(
    a_published_event_links_its_dispatch_and_deliveries_and_sends_its_traceparent,
    the_header_is_not_sent_unless_enabled_and_inline_attempts_link_too,
);
