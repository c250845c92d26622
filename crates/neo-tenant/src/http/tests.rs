use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{HeaderName, Request, StatusCode},
    routing::get,
};
use neo_core::TenantId;
use tower::ServiceExt;
use tracing::Instrument;
use tracing_subscriber::{layer::SubscriberExt, registry::LookupSpan};

use super::*;

/// Answers the tenant the handler runs for, or the `require` error.
async fn whoami() -> String {
    crate::require().map_or_else(|error| format!("error: {error}"), |t| t.to_string())
}

fn app(resolver: impl TenantResolver) -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/t/{tenant}/whoami", get(whoami))
        .layer(TenantLayer::new(resolver))
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, String, Option<String>) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf-8"),
        content_type,
    )
}

fn get_request(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("request")
}

/// Checks a refusal: its status, the problem content type, and what the body says.
fn assert_refused(
    (status, body, content_type): (StatusCode, String, Option<String>),
    expected: StatusCode,
    kind: &str,
    detail_contains: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(body["status"], expected.as_u16());
    assert_eq!(body["kind"], kind);
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(detail_contains), "{detail}");
}

#[tokio::test]
async fn header_resolver_runs_the_handler_in_the_tenant_scope() {
    let tenant = TenantId::new();
    let (status, body, _) = send(
        app(HeaderResolver::default()),
        get_request("/whoami", &[("x-tenant-id", &tenant.to_string())]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, tenant.to_string());
}

#[tokio::test]
async fn header_resolver_reads_a_configured_header() {
    let tenant = TenantId::new();
    let resolver = HeaderResolver::new(HeaderName::from_static("x-org"));
    let request = get_request(
        "/whoami",
        &[("x-org", &tenant.to_string()), ("x-tenant-id", "ignored")],
    );
    let (status, body, _) = send(app(resolver), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, tenant.to_string());
}

#[tokio::test]
async fn header_resolver_refuses_a_missing_header_with_404() {
    let refused = send(app(HeaderResolver::default()), get_request("/whoami", &[])).await;
    assert_refused(
        refused,
        StatusCode::NOT_FOUND,
        "not_found",
        "header x-tenant-id",
    );
}

#[tokio::test]
async fn header_resolver_refuses_an_invalid_id_with_400() {
    // A v4 UUID, a glob and a non-id: TenantId's own validation refuses each.
    for bad in ["67e55044-10b1-426f-9247-bb680e5fe0c8", "*", "acme"] {
        let request = get_request("/whoami", &[("x-tenant-id", bad)]);
        let refused = send(app(HeaderResolver::default()), request).await;
        assert_refused(
            refused,
            StatusCode::BAD_REQUEST,
            "validation",
            "not a valid tenant id",
        );
    }
}

#[tokio::test]
async fn path_segment_resolver_reads_its_segment() {
    let tenant = TenantId::new();
    let uri = format!("/t/{tenant}/whoami");
    let (status, body, _) = send(app(PathSegmentResolver::new(1)), get_request(&uri, &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, tenant.to_string());
}

#[tokio::test]
async fn path_segment_resolver_refuses_a_short_path_and_a_bad_segment() {
    let refused = send(
        app(PathSegmentResolver::new(3)),
        get_request("/whoami", &[]),
    )
    .await;
    assert_refused(
        refused,
        StatusCode::NOT_FOUND,
        "not_found",
        "path segment 3",
    );
    let refused = send(
        app(PathSegmentResolver::new(1)),
        get_request("/t/not-a-tenant/whoami", &[]),
    )
    .await;
    assert_refused(
        refused,
        StatusCode::BAD_REQUEST,
        "validation",
        "path segment 1",
    );
}

#[tokio::test]
async fn subdomain_resolver_reads_the_label_under_the_base_domain() {
    let tenant = TenantId::new();
    let host = format!("{tenant}.API.example.com:8443");
    let request = get_request("/whoami", &[("host", &host)]);
    let (status, body, _) = send(app(SubdomainResolver::new("api.example.com")), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, tenant.to_string());
}

#[tokio::test]
async fn subdomain_resolver_refuses_other_hosts_and_bad_labels() {
    let resolver = || SubdomainResolver::new("api.example.com");
    for host in ["api.example.com", "evil-api.example.com", "example.org"] {
        let refused = send(app(resolver()), get_request("/whoami", &[("host", host)])).await;
        assert_refused(
            refused,
            StatusCode::NOT_FOUND,
            "not_found",
            "api.example.com",
        );
    }
    let refused = send(app(resolver()), get_request("/whoami", &[])).await;
    assert_refused(
        refused,
        StatusCode::NOT_FOUND,
        "not_found",
        "api.example.com",
    );
    let host = format!("x.{}.api.example.com", TenantId::new());
    let refused = send(app(resolver()), get_request("/whoami", &[("host", &host)])).await;
    assert_refused(refused, StatusCode::BAD_REQUEST, "validation", "subdomain");
}

/// Collects the values recorded for `tenant` on spans after they were created.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorded {
    fn on_record(
        &self,
        _span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Visit<'a>(&'a Mutex<Vec<String>>);
        impl tracing::field::Visit for Visit<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "tenant" {
                    self.0.lock().expect("lock").push(format!("{value:?}"));
                }
            }
        }
        values.record(&mut Visit(&self.0));
    }
}

#[tokio::test]
async fn the_tenant_is_recorded_on_the_request_span() {
    let recorded = Recorded::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let tenant = TenantId::new();
    let span = tracing::info_span!("request", tenant = tracing::field::Empty);
    let request = get_request("/whoami", &[("x-tenant-id", &tenant.to_string())]);
    let (status, _, _) = send(app(HeaderResolver::default()), request)
        .instrument(span)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*recorded.0.lock().expect("lock"), vec![tenant.to_string()]);
}
