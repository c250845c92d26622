//! A fresh database with a queue, an outbox and webhook tables, a console over them, and
//! helpers to call its router.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use neo_console::{BearerToken, Console, ConsoleBuilder, ConsoleConfig};
use neo_db::{Db, DbConfig};
use neo_events::{
    AddressPolicy, DomainEvent, NewEndpoint, Outbox, OutboxConfig, WebhookConfig, Webhooks,
};
use neo_queue::{Queue, QueueConfig};
use std::time::Duration;
use tower::ServiceExt;

pub(crate) const TOKEN: &str = "console-test-token-0123456789";
pub(crate) const KEY: [u8; 32] = [7; 32];

pub(crate) struct Setup {
    _test_db: neo_testkit::TestDatabase,
    pub(crate) db: Db,
    pub(crate) queue: Queue,
    pub(crate) outbox: Outbox,
    pub(crate) webhooks: Webhooks,
}

/// Webhooks that may deliver to loopback receivers, dead after one failed attempt, every
/// attempt made by a worker (no inline first attempts): the pages are read with the delivery
/// states each test sets up, which a fan-out's own attempt would race.
pub(crate) fn webhook_config() -> WebhookConfig {
    WebhookConfig {
        inline_attempts: 0,
        addresses: AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        },
        require_https: false,
        request_timeout: Duration::from_millis(500),
        retry_schedule: Vec::new(),
        retry_jitter: 0.0,
        ..WebhookConfig::default()
    }
}

pub(crate) async fn setup() -> Setup {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .expect("connect");
    let queue = Queue::new(
        &db,
        QueueConfig {
            lease: Duration::from_secs(5),
            ..QueueConfig::default()
        },
    )
    .expect("queue");
    queue.migrate().await.expect("queue migrations");
    let outbox = Outbox::new(&db, OutboxConfig::default()).expect("outbox");
    outbox.migrate().await.expect("outbox migrations");
    let webhooks = Webhooks::new(&db, queue.clone(), webhook_config()).expect("webhooks");
    webhooks.migrate().await.expect("webhook migrations");
    Setup {
        _test_db: test_db,
        db,
        queue,
        outbox,
        webhooks,
    }
}

impl Setup {
    /// The operator console over everything, mounted at `/ops`.
    pub(crate) fn builder(&self) -> ConsoleBuilder {
        let config = ConsoleConfig::default();
        let auth = BearerToken::new(TOKEN.to_owned().into(), &config.cookie_name).expect("token");
        Console::builder(config, auth)
            .key(KEY.to_vec())
            .db(&self.db, neo_observe::ObserveConfig::default())
            .queue(self.queue.clone())
            .webhooks(self.webhooks.clone())
            .outbox("neo_events")
    }

    pub(crate) fn app(&self, console: &Console) -> Router {
        Router::new().nest("/ops", console.router())
    }

    pub(crate) fn operator(&self) -> Router {
        self.app(&self.builder().build().expect("console"))
    }

    /// An endpoint at `url`, subscribed to everything.
    pub(crate) async fn endpoint(&self, new: NewEndpoint) -> neo_events::Endpoint {
        self.webhooks
            .create_endpoint(new.subscribe("*"))
            .await
            .expect("endpoint")
    }

    /// Fans `payload` out as an `organization.created` event.
    pub(crate) async fn fan_out(
        &self,
        payload: serde_json::Value,
        tenant: Option<neo_core::TenantId>,
    ) {
        let mut event = DomainEvent::new("organization.created", "organization", "org_1", &payload)
            .expect("event");
        if let Some(t) = tenant {
            event = event.tenant(t);
        }
        self.webhooks.fan_out(&[event]).await.expect("fan out");
    }
}

/// The answer to a request: status, headers and body text.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

pub(crate) async fn call(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// GET `path` with the operator's bearer token.
pub(crate) async fn get(app: &Router, path: &str) -> Answer {
    call(
        app,
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

/// POST `form` (urlencoded) to `path` with the operator's bearer token.
pub(crate) async fn post(app: &Router, path: &str, form: &str) -> Answer {
    call(
        app,
        Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .expect("request"),
    )
    .await
}

/// The CSRF token in a page's first form.
pub(crate) fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}
