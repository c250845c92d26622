//! Event type schemas: invalid schemas refused at registration, payloads that violate their
//! type's schema refused at publish with the offending path, versions side by side, and
//! other processes seeing a new schema after the cache's time to live.

use crate::webhooks::{Isolation, Mode, Sealing, Setup, config, setup_in};
use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{DomainEvent, EventError, EventTypeInfo, Outbox, WebhookConfig, Webhooks};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// An event of `event_type` at schema `version`, of the task's tenant if any.
fn event(event_type: &str, version: i32, payload: &serde_json::Value) -> DomainEvent {
    let event = DomainEvent::new(event_type, "organization", "org_1", payload)
        .unwrap()
        .schema_version(version);
    match neo_tenant::current() {
        Some(tenant) => event.tenant(tenant),
        None => event,
    }
}

/// Publishes `events` with `outbox` in one transaction; commits when it succeeded.
async fn publish(s: &Setup, outbox: &Outbox, events: &[DomainEvent]) -> Result<(), EventError> {
    let mut uow = s.begin().await;
    outbox.publish_many(&mut *uow, events).await?;
    uow.commit().await.unwrap();
    Ok(())
}

fn violation(result: Result<(), EventError>) -> (String, i32, String, String) {
    match result.unwrap_err() {
        EventError::SchemaViolation {
            event_type,
            version,
            path,
            message,
        } => (event_type, version, path, message),
        other => panic!("not a schema violation: {other:?}"),
    }
}

async fn payloads_are_checked_against_their_types_versioned_schema(mode: Mode) {
    let s = setup_in(mode, config(&[])).await;
    let w = &s.webhooks;
    let outbox = s.outbox.clone().with_check(Arc::new(w.clone()));

    // A schema that is not one is refused, and nothing is stored.
    for bad in [json!({ "type": 12 }), json!({ "minimum": "zero" })] {
        let error = w
            .register_event_schema("organization.created", 1, &bad)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
        let error = w
            .register_event_type(&EventTypeInfo {
                name: "organization.created".into(),
                description: String::new(),
                schema: Some(bad),
            })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    }
    let bad_version = w
        .register_event_schema("organization.created", 0, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(bad_version.kind(), ErrorKind::Validation);
    publish(&s, &outbox, &[event("organization.created", 1, &json!(7))])
        .await
        .unwrap();

    // Two versions side by side.
    let v1 = json!({
        "type": "object",
        "required": ["name"],
        "properties": { "name": { "type": "string" } }
    });
    let v2 = json!({
        "type": "object",
        "required": ["name", "members"],
        "properties": {
            "name": { "type": "string" },
            "members": { "type": "integer", "minimum": 0 }
        }
    });
    w.register_event_schema("organization.created", 1, &v1)
        .await
        .unwrap();
    w.register_event_schema("organization.created", 2, &v2)
        .await
        .unwrap();
    let pending = s.outbox.pending().await.unwrap();
    publish(
        &s,
        &outbox,
        &[
            event("organization.created", 1, &json!({ "name": "Acme" })),
            event(
                "organization.created",
                2,
                &json!({ "name": "Acme", "members": 3 }),
            ),
            event("billing.invoiced", 1, &json!("no schema, not checked")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.outbox.pending().await.unwrap(), pending + 3);

    // Violations name the type, the version, the path and the reason; nothing of the batch
    // is recorded.
    let (event_type, version, path, message) = violation(
        publish(
            &s,
            &outbox,
            &[
                event(
                    "organization.created",
                    2,
                    &json!({ "name": "Ok", "members": 1 }),
                ),
                event(
                    "organization.created",
                    2,
                    &json!({ "name": "Acme", "members": -1 }),
                ),
            ],
        )
        .await,
    );
    assert_eq!(
        (event_type.as_str(), version, path.as_str()),
        ("organization.created", 2, "/members")
    );
    assert!(
        message.contains("minimum") || message.contains("-1"),
        "{message}"
    );
    let (_, version, path, message) = violation(
        publish(
            &s,
            &outbox,
            &[event("organization.created", 1, &json!({ "id": 1 }))],
        )
        .await,
    );
    assert_eq!((version, path.as_str()), (1, ""));
    assert!(message.contains("name"), "{message}");
    // Version 1's payload is not version 2's.
    let (_, version, path, _) = violation(
        publish(
            &s,
            &outbox,
            &[event("organization.created", 2, &json!({ "name": "A" }))],
        )
        .await,
    );
    assert_eq!((version, path.as_str()), (2, ""));
    let (_, version, _, message) = violation(
        publish(
            &s,
            &outbox,
            &[event("organization.created", 3, &json!({ "name": "A" }))],
        )
        .await,
    );
    assert_eq!(version, 3);
    assert!(message.contains("no schema"), "{message}");
    let mut uow = s.begin().await;
    let keyed = outbox
        .publish_idempotent(
            &mut *uow,
            &event("organization.created", 1, &json!({ "name": 5 })),
            "k",
        )
        .await;
    let (_, _, path, _) = violation(keyed.map(drop));
    assert_eq!(path, "/name");
    drop(uow);
    assert_eq!(
        s.outbox.pending().await.unwrap(),
        pending + 3,
        "no refused event recorded"
    );
    // Without the check the outbox records what it is given.
    publish(
        &s,
        &s.outbox,
        &[event("organization.created", 1, &json!(1))],
    )
    .await
    .unwrap();

    // Another process sees a new schema once its cached answer has expired.
    let other = Webhooks::new(
        &s.system,
        s.queue.clone(),
        WebhookConfig {
            schema_cache_ttl: Duration::from_millis(300),
            ..config(&[])
        },
    )
    .unwrap();
    let renamed = [event("organization.renamed", 1, &json!({}))];
    other.validate_events(&renamed).await.unwrap();
    w.register_event_schema("organization.renamed", 1, &v1)
        .await
        .unwrap();
    other.validate_events(&renamed).await.unwrap();
    w.validate_events(&renamed).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, _, _, message) = violation(other.validate_events(&renamed).await);
    assert!(message.contains("name"), "{message}");
}

macro_rules! modes {
    ($($name:ident = ($route:ident, $isolation:ident)),+) => {
        $(
            #[tokio::test]
            async fn $name() {
                let mode = Mode {
                    route: PgRoute::$route,
                    sealing: Sealing::Off,
                    isolation: Isolation::$isolation,
                };
                mode.run(payloads_are_checked_against_their_types_versioned_schema(mode))
                    .await;
            }
        )+
    };
}

modes!(
    plain = (Direct, Shared),
    pgbouncer = (PgBouncer, Shared),
    rls = (Direct, Rls)
);
