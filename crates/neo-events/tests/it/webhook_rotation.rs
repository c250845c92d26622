//! Moving endpoints to a new key (rotation) and from plain text to sealed (migration) while
//! deliveries go on; retiring the old key; the strict mode.

use crate::webhook_sealing::{
    KEY_1, KEY_2, dump_every_table, seal_error, sealed_setup, sealer, signed_headers,
};
use crate::webhooks::{Running, Setup, config, event, finish, setup};
use neo_core::{ErrorKind, HasErrorKind, SecretString};
use neo_db::seal::{SealConfig, SealProblem, StaticKeyProvider};
use neo_events::{
    DeliveryStatus, Endpoint, EventError, NewEndpoint, ResealConfig, ResealProgress, Verifier,
    WebhookConfig, WebhookSecret, Webhooks,
};
use neo_testkit::HttpReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn provider(current: &str, keys: &[(&str, &str)]) -> Arc<StaticKeyProvider> {
    Arc::new(
        StaticKeyProvider::from_config(&SealConfig {
            current_key_id: current.into(),
            keys: keys
                .iter()
                .map(|(id, key)| ((*id).to_owned(), SecretString::from(*key)))
                .collect(),
            ..SealConfig::default()
        })
        .unwrap(),
    )
}

fn small_batches(batch_size: u32) -> WebhookConfig {
    WebhookConfig {
        reseal: ResealConfig {
            batch_size,
            pause: Duration::from_millis(20),
        },
        ..config(&[100, 100, 100])
    }
}

/// Publishes `events` events, three per transaction, with pauses: load that runs while the
/// test rotates.
fn publish_in_background(s: &Setup, events: u32) -> tokio::task::JoinHandle<()> {
    let (db, outbox) = (s.db.clone(), s.outbox.clone());
    tokio::spawn(async move {
        for first in (0..events).step_by(3) {
            let batch: Vec<_> = (first..(first + 3).min(events))
                .map(|n| event("organization.created", n))
                .collect();
            let mut uow = db.begin().await.unwrap();
            outbox.publish_many(&mut *uow, &batch).await.unwrap();
            uow.commit().await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// Every endpoint got every event exactly once, signed with one of its secrets and carrying
/// its header, and every delivery is recorded delivered.
async fn each_delivered_once(
    s: &Setup,
    receiver: &HttpReceiver,
    endpoints: &[(Endpoint, Vec<WebhookSecret>, String)],
    events: u32,
) {
    let expected = endpoints.len() * events as usize;
    receiver.wait_for(expected, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), expected, "lost or duplicated deliveries");
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let by_path: HashMap<String, &(Endpoint, Vec<WebhookSecret>, String)> = endpoints
        .iter()
        .map(|e| (format!("/e{}", e.2), e))
        .collect();
    for request in &requests {
        let path = request.uri.path().to_owned();
        let (_, secrets, n) = by_path[&path];
        let headers = signed_headers(request);
        Verifier::new(secrets.clone())
            .verify_headers(
                Some(&headers.id),
                Some(&headers.timestamp.to_string()),
                Some(&headers.signature),
                &request.body,
            )
            .unwrap();
        assert_eq!(request.header("x-token"), Some(format!("tok-{n}").as_str()));
        *seen.entry((path, headers.id)).or_default() += 1;
    }
    assert_eq!(seen.len(), expected);
    assert!(seen.values().all(|n| *n == 1), "a message arrived twice");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (endpoint, _, _) in endpoints {
        loop {
            let delivered = s
                .webhooks
                .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 1_000)
                .await
                .unwrap()
                .len();
            if delivered == events as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{delivered} of {events} recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn create_endpoints(
    webhooks: &Webhooks,
    receiver: &HttpReceiver,
    n: usize,
) -> Vec<(Endpoint, Vec<WebhookSecret>, String)> {
    let mut endpoints = Vec::new();
    for i in 0..n {
        let endpoint = webhooks
            .create_endpoint(
                NewEndpoint::new(receiver.url(&format!("/e{i}")))
                    .subscribe("*")
                    .header("x-token", format!("tok-{i}")),
            )
            .await
            .unwrap();
        let secrets = vec![endpoint.secret().clone()];
        endpoints.push((endpoint, secrets, i.to_string()));
    }
    endpoints
}

fn assert_progress(reports: &[ResealProgress], batch_size: u64, total: u64) {
    assert!(reports.len() >= 2, "{reports:?}");
    for pair in reports.windows(2) {
        let step = pair[1].resealed - pair[0].resealed;
        assert!(
            step <= batch_size,
            "a batch larger than the bound: {reports:?}"
        );
        assert!(pair[1].remaining <= pair[0].remaining, "{reports:?}");
        assert!(pair[1].last_id >= pair[0].last_id, "{reports:?}");
    }
    let last = reports.last().unwrap();
    assert_eq!((last.resealed, last.remaining), (total, 0), "{reports:?}");
}

#[tokio::test]
async fn rotation_under_delivery_load_loses_and_duplicates_nothing_then_retires_the_old_key() {
    const ENDPOINTS: usize = 12;
    const EVENTS: u32 = 45;
    let sealer = sealer("k1", &[("k1", KEY_1)]);
    let s = sealed_setup(small_batches(5), sealer.clone()).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let mut endpoints = create_endpoints(&s.webhooks, &receiver, ENDPOINTS).await;
    let running = Running::start(&s);
    let publisher = publish_in_background(&s, EVENTS);
    receiver.wait_for(ENDPOINTS, Duration::from_secs(10)).await;

    // A new current key; the old one still opens what is under it.
    sealer.replace_provider(provider("k2", &[("k1", KEY_1), ("k2", KEY_2)]));
    let (key_id, problem, message) = seal_error(s.webhooks.retire_key("k1").await);
    assert_eq!(
        (key_id.as_str(), problem),
        (
            "k1",
            SealProblem::StillInUse {
                rows: ENDPOINTS as u64
            }
        )
    );
    assert!(
        message.contains("\"k1\"") && message.contains("12 stored row"),
        "{message}"
    );

    // A pass that crashes after its first batch (aborted at its pause)...
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let webhooks = s.webhooks.clone();
    let crashed = tokio::spawn(async move {
        webhooks
            .reseal(None, |progress| {
                let _ = tx.send(*progress);
            })
            .await
    });
    let first = rx.recv().await.unwrap();
    crashed.abort();
    assert_eq!((first.resealed, first.remaining), (5, ENDPOINTS as u64 - 5));
    // ...an endpoint not reached yet rotates its secret meanwhile (new secret under k2, the
    // previous one still under k1)...
    let last = endpoints.last_mut().unwrap();
    let rotated = s.webhooks.rotate_secret(last.0.id).await.unwrap();
    last.1.push(rotated);
    // ...and the pass resumes after the last id it reported, in bounded batches.
    let mut reports = vec![first];
    let done = s
        .webhooks
        .reseal(first.last_id, |progress| {
            let mut whole = *progress;
            whole.resealed += first.resealed;
            reports.push(whole);
        })
        .await
        .unwrap();
    assert_eq!(done.remaining, 0);
    assert_progress(&reports, 5, ENDPOINTS as u64);

    // Nothing is under k1 now: it retires, and a process holding only k2 reads every
    // endpoint.
    let at_rest = s.webhooks.at_rest().await.unwrap();
    assert_eq!(at_rest.plain_rows, 0);
    assert_eq!(
        at_rest.rows_by_key,
        [("k2".to_owned(), ENDPOINTS as u64)].into()
    );
    s.webhooks.retire_key("k1").await.unwrap();
    let only_k2 =
        Webhooks::sealed(&s.db, s.queue.clone(), config(&[100]), sealer_only_k2()).unwrap();
    for (endpoint, secrets, n) in &endpoints {
        let read = only_k2.endpoint(endpoint.id).await.unwrap();
        assert_eq!(read.secret(), secrets.last().unwrap());
        assert_eq!(read.headers["x-token"], format!("tok-{n}"));
    }

    publisher.await.unwrap();
    each_delivered_once(&s, &receiver, &endpoints, EVENTS).await;
    finish(running, &s, receiver).await;
}

fn sealer_only_k2() -> neo_db::seal::Sealer {
    sealer("k2", &[("k2", KEY_2)])
}

#[tokio::test]
async fn plain_endpoints_move_to_sealed_while_delivering_and_strict_mode_waits_for_it() {
    const ENDPOINTS: usize = 7;
    const EVENTS: u32 = 24;
    // Endpoints stored in plain text, as before sealing was turned on.
    let mut s = setup(neo_testkit::PgRoute::Direct, small_batches(2)).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoints = create_endpoints(&s.webhooks, &receiver, ENDPOINTS).await;
    // Three of them were written before the table recorded seal keys.
    sqlx::query(
        "UPDATE neo_events.webhook_endpoints SET sealed_with = NULL \
         WHERE id IN (SELECT id FROM neo_events.webhook_endpoints ORDER BY id LIMIT 3)",
    )
    .execute(s.db.pool())
    .await
    .unwrap();

    // Strict mode refuses to start, counting the endpoints still in plain text; it needs a
    // sealer at all.
    let sealer = sealer("k1", &[("k1", KEY_1)]);
    let strict_config = WebhookConfig {
        require_sealed: true,
        ..small_batches(2)
    };
    let strict = Webhooks::sealed(
        &s.db,
        s.queue.clone(),
        strict_config.clone(),
        sealer.clone(),
    )
    .unwrap();
    let refused = strict.migrate().await.unwrap_err();
    assert!(
        matches!(refused, EventError::PlainTextAtRest { rows } if rows == ENDPOINTS as u64),
        "{refused:?}"
    );
    assert_eq!(refused.kind(), ErrorKind::Configuration);
    assert!(
        refused.to_string().contains("7 webhook endpoint"),
        "{refused}"
    );
    assert_eq!(
        Webhooks::new(&s.db, s.queue.clone(), strict_config)
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );

    // Sealed webhooks (not strict) take over: plain endpoints keep delivering while they
    // are sealed batch by batch.
    s.webhooks = Webhooks::sealed(&s.db, s.queue.clone(), small_batches(2), sealer).unwrap();
    let running = Running::start(&s);
    let publisher = publish_in_background(&s, EVENTS);
    receiver.wait_for(ENDPOINTS, Duration::from_secs(10)).await;
    let mut reports = Vec::new();
    let done = s
        .webhooks
        .reseal(None, |progress| reports.push(*progress))
        .await
        .unwrap();
    assert_eq!(done.remaining, 0);
    assert_progress(&reports, 2, ENDPOINTS as u64);
    publisher.await.unwrap();

    strict.migrate().await.unwrap();
    assert_eq!(
        strict.ensure_sealed().await.unwrap().rows_by_key,
        [("k1".to_owned(), ENDPOINTS as u64)].into()
    );
    let dump = dump_every_table(&s.db).await;
    for (endpoint, _, n) in &endpoints {
        let exposed = endpoint.secret().expose();
        assert!(!dump.contains(exposed.trim_start_matches("whsec_")));
        assert!(
            !dump.contains(&format!("tok-{n}\"")),
            "tok-{n} is in the dump"
        );
    }
    each_delivered_once(&s, &receiver, &endpoints, EVENTS).await;
    finish(running, &s, receiver).await;
}

#[tokio::test]
async fn the_key_registry_retires_a_key_for_every_instance_once_no_endpoint_uses_it() {
    use neo_db::seal::{KeyRegistry, KeyRegistryConfig};
    let sealer = sealer("k1", &[("k1", KEY_1)]);
    let s = sealed_setup(small_batches(5), sealer.clone()).await;
    let receiver = HttpReceiver::start().await.unwrap();
    create_endpoints(&s.webhooks, &receiver, 3).await;
    sealer.replace_provider(provider("k2", &[("k1", KEY_1), ("k2", KEY_2)]));
    let registry = KeyRegistry::install(&s.db, &sealer, KeyRegistryConfig::default())
        .await
        .unwrap();
    // Another instance, with its own sealer over the same keys.
    let other = sealer_after_rotation();
    let other_registry = KeyRegistry::install(&s.db, &other, KeyRegistryConfig::default())
        .await
        .unwrap();

    let refused = registry.retire("k1", &[&s.webhooks]).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            neo_db::Error::Seal {
                problem: SealProblem::StillInUse { rows: 3 },
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(s.webhooks.reseal(None, |_| {}).await.unwrap().remaining, 0);
    registry.retire("k1", &[&s.webhooks]).await.unwrap();
    assert!(sealer.is_retired("k1"));
    assert!(!other.is_retired("k1"));
    other_registry.refresh().await.unwrap();
    assert!(other.is_retired("k1"));
}

fn sealer_after_rotation() -> neo_db::seal::Sealer {
    sealer("k2", &[("k1", KEY_1), ("k2", KEY_2)])
}
