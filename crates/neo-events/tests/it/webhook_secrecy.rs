//! Secrets never in the clear: every type holding a secret, header value or key, formatted
//! with `Debug` and `Display`, its errors, and everything logged (tracing, DEBUG and up)
//! while endpoints are created, rotated, re-sealed and delivered to, show none of them.

use crate::webhook_sealing::{KEY_1, KEY_2, sealed_setup};
use crate::webhooks::{Running, config, event, finish, publish};
use neo_core::SecretString;
use neo_db::seal::{Binding, SealConfig, Sealed, StaticKeyProvider};
use neo_events::{NewEndpoint, WebhookSecret, Webhooks};
use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "Bearer tok-9c1e77-receiver-credential";

/// Formatted tracing output of the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails naming `what` when `shown` holds a secret.
fn shows_none(what: &str, shown: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "{what} shows a secret: {shown}"
        );
    }
}

#[tokio::test]
async fn no_secret_header_value_or_key_reaches_debug_display_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let seal_config = SealConfig {
        current_key_id: "k1".into(),
        keys: [("k1".to_owned(), SecretString::from(KEY_1))].into(),
        ..SealConfig::default()
    };
    let sealer = neo_db::seal::Sealer::from_config(&seal_config).unwrap();
    let s = sealed_setup(config(&[50, 50]), sealer.clone()).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let given = WebhookSecret::generate();
    let mut secrets = vec![
        TOKEN.to_owned(),
        "tok-9c1e77".to_owned(),
        KEY_1.to_owned(),
        KEY_2.to_owned(),
        "0123456789abcdef".to_owned(),
        given.expose().trim_start_matches("whsec_").to_owned(),
    ];
    let new = NewEndpoint::new(receiver.url("/hook"))
        .subscribe("*")
        .header("authorization", TOKEN)
        .secret(given.clone());
    shows_none("NewEndpoint", &format!("{new:?}"), &secrets);
    assert!(format!("{new:?}").contains("authorization"));
    let endpoint = s.webhooks.create_endpoint(new).await.unwrap();
    let rotated = s.webhooks.rotate_secret(endpoint.id).await.unwrap();
    secrets.push(rotated.expose().trim_start_matches("whsec_").to_owned());
    let read = s.webhooks.endpoint(endpoint.id).await.unwrap();
    for (what, shown) in [
        ("Endpoint", format!("{endpoint:?}")),
        ("read Endpoint", format!("{read:?}")),
        ("rotated secret", format!("{rotated:?}")),
        ("Webhooks", format!("{:?}", s.webhooks)),
        ("Sealer", format!("{sealer:?}")),
        ("SealConfig", format!("{seal_config:?}")),
        ("WebhookConfig", format!("{:?}", s.webhooks.config())),
    ] {
        shows_none(what, &shown, &secrets);
    }

    // A sealed column value, and the provider after a rotation to k2.
    let row = endpoint.id.to_string();
    let here = Binding::new("accounts", "token", &row);
    let column = Sealed::seal(&sealer, &TOKEN.to_owned(), &here)
        .await
        .unwrap();
    shows_none("Sealed", &format!("{column:?}"), &secrets);
    sealer.replace_provider(Arc::new(
        StaticKeyProvider::from_config(&SealConfig {
            current_key_id: "k2".into(),
            keys: [
                ("k1".to_owned(), SecretString::from(KEY_1)),
                ("k2".to_owned(), SecretString::from(KEY_2)),
            ]
            .into(),
            ..SealConfig::default()
        })
        .unwrap(),
    ));
    shows_none("Sealer after rotation", &format!("{sealer:?}"), &secrets);

    // Errors: a header value refused, a key that does not open, a key still in use.
    let refused = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/bad")).header("x-token", "tok-9c1e77\nsplit"),
        )
        .await
        .unwrap_err();
    let wrong_key = Webhooks::sealed(
        &s.db,
        s.queue.clone(),
        config(&[50]),
        crate::webhook_sealing::sealer("k1", &[("k1", KEY_2)]),
    )
    .unwrap()
    .endpoint(endpoint.id)
    .await
    .unwrap_err();
    let in_use = s.webhooks.retire_key("k1").await.unwrap_err();
    for (what, error) in [
        ("refused", refused),
        ("wrong key", wrong_key),
        ("in use", in_use),
    ] {
        shows_none(what, &format!("{error} / {error:?}"), &secrets);
    }

    // Re-sealing, a failed attempt and a delivery, logged at DEBUG.
    let progress = s.webhooks.reseal(None, |_| {}).await.unwrap();
    let at_rest = s.webhooks.at_rest().await.unwrap();
    shows_none("progress", &format!("{progress:?} {at_rest:?}"), &secrets);
    receiver.push(ScriptedResponse::status(500));
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(requests[1].header("authorization"), Some(TOKEN));
    let deliveries = s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap();
    shows_none("Delivery", &format!("{deliveries:?}"), &secrets);
    finish(running, &s, receiver).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("re-sealed") && logs.contains("sealer keys replaced"),
        "the logs were captured: {logs}"
    );
    shows_none("the logs", &logs, &secrets);
}
