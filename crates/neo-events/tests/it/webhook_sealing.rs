//! Endpoint secrets and headers sealed at rest (`Webhooks::sealed`).

use crate::webhooks::{Running, config, event, finish, publish, setup};
use neo_core::{ErrorKind, HasErrorKind, SecretString};
use neo_db::seal::{SealConfig, SealProblem, Sealer};
use neo_events::{
    EventError, NewEndpoint, SignedHeaders, Verifier, WebhookConfig, WebhookSecret, Webhooks,
};
use neo_testkit::{HttpReceiver, ReceivedRequest};
use std::time::Duration;

pub(crate) const KEY_1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub(crate) const KEY_2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

pub(crate) fn sealer(current: &str, keys: &[(&str, &str)]) -> Sealer {
    Sealer::from_config(&SealConfig {
        current_key_id: current.into(),
        keys: keys
            .iter()
            .map(|(id, key)| ((*id).to_owned(), SecretString::from(*key)))
            .collect(),
        ..SealConfig::default()
    })
    .unwrap()
}

/// The setup of the webhook tests with sealed webhooks in place of plain ones.
pub(crate) async fn sealed_setup(config: WebhookConfig, sealer: Sealer) -> crate::webhooks::Setup {
    let mut s = setup(neo_testkit::PgRoute::Direct, config.clone()).await;
    s.webhooks = Webhooks::sealed(&s.db, s.queue.clone(), config, sealer).unwrap();
    s
}

/// Every row of every table of the database, as text.
pub(crate) async fn dump_every_table(db: &neo_db::Db) -> String {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(
        tables.iter().any(|(_, t)| t == "webhook_endpoints"),
        "{tables:?}"
    );
    let mut dump = String::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT t::text FROM {}.{} t",
            neo_db::quote_identifier(&schema).unwrap(),
            neo_db::quote_identifier(&table).unwrap()
        );
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.pool())
            .await
            .unwrap();
        for row in rows {
            dump.push_str(&format!("{schema}.{table}: {row}\n"));
        }
    }
    dump
}

pub(crate) fn signed_headers(request: &ReceivedRequest) -> SignedHeaders {
    SignedHeaders {
        id: request.header("webhook-id").unwrap().to_owned(),
        timestamp: request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap(),
        signature: request.header("webhook-signature").unwrap().to_owned(),
    }
}

fn verify(secret: &WebhookSecret, request: &ReceivedRequest) {
    let headers = signed_headers(request);
    Verifier::new(vec![secret.clone()])
        .verify_headers(
            Some(&headers.id),
            Some(&headers.timestamp.to_string()),
            Some(&headers.signature),
            &request.body,
        )
        .unwrap();
}

pub(crate) fn seal_error(
    result: Result<impl std::fmt::Debug, EventError>,
) -> (String, SealProblem, String) {
    match result.unwrap_err() {
        EventError::Db(error) => {
            let message = error.to_string();
            assert_eq!(
                error.kind(),
                match &error {
                    neo_db::Error::Seal { problem, .. } => problem.kind(),
                    other => panic!("expected a seal error, got {other:?}"),
                }
            );
            match error {
                neo_db::Error::Seal { key_id, problem } => (key_id, problem, message),
                other => panic!("expected a seal error, got {other:?}"),
            }
        }
        other => panic!("expected a seal error, got {other:?}"),
    }
}

#[tokio::test]
async fn sealed_secrets_and_headers_are_in_no_table_and_deliveries_are_signed() {
    let s = sealed_setup(config(&[100]), sealer("k1", &[("k1", KEY_1)])).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let token = "Bearer tok-4f1c9a7e-receiver-credential";
    let given = WebhookSecret::generate();
    let with_header = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/a"))
                .subscribe("*")
                .header("authorization", token)
                .header("x-team", "team-billing-7c3d"),
        )
        .await
        .unwrap();
    let with_given = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/b"))
                .subscribe("*")
                .secret(given.clone()),
        )
        .await
        .unwrap();
    assert_eq!(with_given.secret(), &given);
    assert_eq!(with_header.headers["authorization"], token);
    // The previous secret stays (sealed) for the overlap.
    let previous = with_header.secret().clone();
    let current = s.webhooks.rotate_secret(with_header.id).await.unwrap();
    let read = s.webhooks.endpoint(with_header.id).await.unwrap();
    assert_eq!(read.secret(), &current);
    assert_eq!(read.headers["x-team"], "team-billing-7c3d");
    assert_eq!(s.webhooks.endpoints(None).await.unwrap().len(), 2);

    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    for request in &requests {
        if request.uri.path() == "/a" {
            verify(&previous, request);
            verify(&current, request);
            assert_eq!(request.header("authorization"), Some(token));
            assert_eq!(request.header("x-team"), Some("team-billing-7c3d"));
        } else {
            verify(&given, request);
        }
    }
    finish(running, &s, receiver).await;

    let dump = dump_every_table(&s.db).await;
    assert!(dump.contains("sealed:"), "the secrets are stored sealed");
    for secret in [&previous, &current, &given] {
        let exposed = secret.expose();
        let key_part = exposed.trim_start_matches("whsec_");
        assert!(!dump.contains(key_part), "a secret is in the dump");
    }
    for value in [token, "tok-4f1c9a7e", "team-billing-7c3d"] {
        assert!(
            !dump.contains(value),
            "header value {value:?} is in the dump"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_a_typed_error_naming_the_key_id() {
    let s = sealed_setup(config(&[100]), sealer("k1", &[("k1", KEY_1)])).await;
    let endpoint = s
        .webhooks
        .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook").header("x-token", "t-123"))
        .await
        .unwrap();
    let secret = endpoint.secret().expose();
    let with = |sealer: Option<Sealer>| match sealer {
        Some(sealer) => Webhooks::sealed(&s.db, s.queue.clone(), config(&[100]), sealer).unwrap(),
        None => Webhooks::new(&s.db, s.queue.clone(), config(&[100])).unwrap(),
    };

    // The same key id with other key material.
    let (key_id, problem, message) = seal_error(
        with(Some(sealer("k1", &[("k1", KEY_2)])))
            .endpoint(endpoint.id)
            .await,
    );
    assert_eq!(
        (key_id.as_str(), problem.clone()),
        ("k1", SealProblem::WrongKey)
    );
    assert_eq!(problem.kind(), ErrorKind::Configuration);
    assert!(
        message.contains("\"k1\"") && !message.contains(&secret),
        "{message}"
    );

    // A provider that does not hold k1 (only a newer key).
    let (key_id, problem, message) = seal_error(
        with(Some(sealer("k2", &[("k2", KEY_2)])))
            .endpoint(endpoint.id)
            .await,
    );
    assert_eq!((key_id.as_str(), problem), ("k1", SealProblem::UnknownKey));
    assert!(message.contains("\"k1\""), "{message}");

    // No sealer at all.
    let (key_id, problem, _) = seal_error(with(None).endpoint(endpoint.id).await);
    assert_eq!(key_id, "k1");
    assert!(matches!(problem, SealProblem::Provider(_)), "{problem:?}");

    // With k1 kept next to a new current key, the endpoint still opens.
    let rotated = with(Some(sealer("k2", &[("k1", KEY_1), ("k2", KEY_2)])));
    let read = rotated.endpoint(endpoint.id).await.unwrap();
    assert_eq!(read.secret().expose(), secret);
    assert_eq!(read.headers["x-token"], "t-123");
}

#[tokio::test]
async fn a_sealed_secret_or_header_copied_to_another_endpoint_does_not_open() {
    let s = sealed_setup(config(&[50, 50]), sealer("k1", &[("k1", KEY_1)])).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let source = s
        .webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/source")).header("x-token", "t-1"))
        .await
        .unwrap();
    let target = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/target"))
                .subscribe("*")
                .header("x-token", "t-2"),
        )
        .await
        .unwrap();
    let table = "neo_events.webhook_endpoints";
    let stored_secrets = |id| {
        sqlx::query_scalar::<_, Vec<String>>(sqlx::AssertSqlSafe(format!(
            "SELECT secrets FROM {table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(s.db.pool())
    };
    let target_secrets = stored_secrets(target.id).await.unwrap();

    // The source's secret in the target's row.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET secrets = (SELECT secrets FROM {table} WHERE id = $1) WHERE id = $2"
    )))
    .bind(source.id)
    .bind(target.id)
    .execute(s.db.pool())
    .await
    .unwrap();
    let (key_id, problem, _) = seal_error(s.webhooks.endpoint(target.id).await);
    assert_eq!((key_id.as_str(), problem), ("k1", SealProblem::DoesNotOpen));

    // A delivery to it fails its attempts instead of signing with the copied secret.
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        assert!(std::time::Instant::now() < deadline, "no attempt was made");
        let deliveries = s.webhooks.deliveries(target.id, None, 10).await.unwrap();
        if let Some(d) = deliveries.into_iter().find(|d| d.attempts > 0) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains("\"k1\"") && error.contains("does not open"),
        "{error}"
    );
    assert!(receiver.requests().is_empty(), "nothing was sent");
    finish(running, &s, receiver).await;

    // Its own secret back in place, it opens again; the source's header value in its row
    // does not.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET secrets = $2 WHERE id = $1"
    )))
    .bind(target.id)
    .bind(&target_secrets)
    .execute(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        s.webhooks.endpoint(target.id).await.unwrap().headers["x-token"],
        "t-2"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET headers = (SELECT headers FROM {table} WHERE id = $1) WHERE id = $2"
    )))
    .bind(source.id)
    .bind(target.id)
    .execute(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        s.webhooks.endpoint(source.id).await.unwrap().headers["x-token"],
        "t-1"
    );
    let (key_id, problem, _) = seal_error(s.webhooks.endpoint(target.id).await);
    assert_eq!((key_id.as_str(), problem), ("k1", SealProblem::DoesNotOpen));

    // A re-seal to a new key skips the endpoint whose values do not open (counted, logged,
    // left as it was) and moves the other one.
    s.webhooks
        .sealer()
        .unwrap()
        .replace_provider(crate::webhook_rotation::provider(
            "k2",
            &[("k1", KEY_1), ("k2", KEY_2)],
        ));
    let done = s.webhooks.reseal(None, |_| {}).await.unwrap();
    assert_eq!((done.resealed, done.failed, done.remaining), (1, 1, 1));
    assert_eq!(
        s.webhooks.endpoint(source.id).await.unwrap().headers["x-token"],
        "t-1"
    );
    assert_eq!(
        s.webhooks.at_rest().await.unwrap().rows_by_key,
        [("k1".to_owned(), 1), ("k2".to_owned(), 1)].into()
    );
}
