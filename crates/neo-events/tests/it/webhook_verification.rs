//! Endpoint verification: a new or re-pointed endpoint gets no delivery until its receiver
//! answers the signed challenge; challenges expire and are re-sent; events fanned out
//! meanwhile wait and are delivered once it is verified.

use crate::webhooks::{Isolation, Mode, Running, Sealing, config, event, publish, setup_in};
use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{
    DeliveryStatus, NewEndpoint, SignedHeaders, Verification, Verifier, WebhookConfig,
    WebhookSecret, verification_answer,
};
use neo_testkit::{HttpReceiver, PgRoute, ReceivedRequest, ScriptedResponse};
use std::time::{Duration, Instant};

fn signed(request: &ReceivedRequest) -> SignedHeaders {
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

/// The receiver answers verification requests as `verification_answer` says (200 with the
/// challenge), every other request with 200.
fn answer_challenges(receiver: &HttpReceiver, secret: WebhookSecret) {
    let verifier = Verifier::new(vec![secret]);
    receiver.respond_with(move |request| {
        let answer = verification_answer(&verifier, &signed(request), &request.body).ok()??;
        Some(ScriptedResponse::ok().body(answer))
    });
}

fn challenge_of(request: &ReceivedRequest) -> String {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "webhook.verification");
    body["data"]["challenge"].as_str().unwrap().to_owned()
}

async fn delivered(s: &crate::webhooks::Setup, endpoint: uuid::Uuid, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .webhooks
        .deliveries(endpoint, Some(DeliveryStatus::Delivered), 100)
        .await
        .unwrap()
        .len()
        < n
    {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn an_endpoint_gets_deliveries_only_once_its_receiver_answered_the_challenge(mode: Mode) {
    let s = setup_in(
        mode,
        WebhookConfig {
            require_verification: true,
            verification_ttl: Duration::from_millis(1_000),
            ..config(&[100])
        },
    )
    .await;
    let w = &s.webhooks;
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = w
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    assert_eq!(
        w.verification(endpoint.id).await.unwrap(),
        Verification::Pending { expires_at: None }
    );
    let running = Running::start(&s);
    let events = [
        event("organization.created", 1),
        event("organization.renamed", 2),
    ];
    publish(&s, &events).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        receiver.requests().is_empty(),
        "delivered before verification"
    );
    let waiting = w.deliveries(endpoint.id, None, 10).await.unwrap();
    assert_eq!(waiting.len(), 2, "fanned out and waiting");
    assert!(
        waiting
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0)
    );

    // A receiver that does not echo the challenge leaves it pending.
    receiver.set_default(ScriptedResponse::ok().body("{}"));
    let pending = w.send_verification(endpoint.id).await.unwrap();
    assert!(
        matches!(
            pending,
            Verification::Pending {
                expires_at: Some(_)
            }
        ),
        "{pending:?}"
    );
    let asked = receiver.requests();
    assert_eq!(asked.len(), 1);
    Verifier::new(vec![endpoint.secret().clone()])
        .verify_at(
            &signed(&asked[0]),
            &asked[0].body,
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
    let challenge = challenge_of(&asked[0]);
    let refused = w
        .confirm_verification(endpoint.id, "not-the-challenge")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation);
    assert!(refused.to_string().contains("does not match"), "{refused}");
    // It expires.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let expired = w
        .confirm_verification(endpoint.id, &challenge)
        .await
        .unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
    assert!(matches!(
        w.verification(endpoint.id).await.unwrap(),
        Verification::Pending { .. }
    ));

    // Re-sent, answered as the helper shows: verified, and the waiting events go out.
    answer_challenges(&receiver, endpoint.secret().clone());
    let verified = w.send_verification(endpoint.id).await.unwrap();
    assert!(
        matches!(verified, Verification::Verified { at: Some(_) }),
        "{verified:?}"
    );
    let second = challenge_of(&receiver.requests()[1]);
    assert_ne!(second, challenge, "a new challenge per request");
    delivered(&s, endpoint.id, 2).await;
    let ids: Vec<String> = receiver.requests()[2..]
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
    let mut got = ids.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "each waiting event once");
    // Confirming again changes nothing.
    w.confirm_verification(endpoint.id, &second).await.unwrap();

    // Re-pointed: pending again, events wait for the new receiver's answer.
    let moved = HttpReceiver::start().await.unwrap();
    w.set_url(endpoint.id, &moved.url("/hook")).await.unwrap();
    assert!(matches!(
        w.verification(endpoint.id).await.unwrap(),
        Verification::Pending { expires_at: None }
    ));
    publish(&s, &[event("organization.deleted", 3)]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        moved.requests().is_empty(),
        "delivered before re-verification"
    );
    assert_eq!(
        receiver.requests().len(),
        4,
        "the old receiver gets nothing new"
    );
    answer_challenges(&moved, endpoint.secret().clone());
    assert!(matches!(
        w.send_verification(endpoint.id).await.unwrap(),
        Verification::Verified { .. }
    ));
    delivered(&s, endpoint.id, 3).await;
    let last = moved.requests();
    assert_eq!(last.len(), 2, "the challenge, then the event");
    assert_eq!(
        last[1].header("webhook-id").unwrap(),
        s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap()[2]
            .message_id
            .to_string()
    );
    running.stop().await;
    s.webhooks.shutdown().await;
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
                mode.run(an_endpoint_gets_deliveries_only_once_its_receiver_answered_the_challenge(mode))
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
