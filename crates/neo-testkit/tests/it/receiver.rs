use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::time::{Duration, Instant};

#[tokio::test]
async fn answers_from_the_script_then_the_default_and_records_requests() {
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.push(ScriptedResponse::status(503).retry_after(Duration::from_secs(7)));
    receiver.push(
        ScriptedResponse::status(410)
            .body("gone")
            .header("x-test", "1"),
    );
    receiver.set_default(ScriptedResponse::status(204));
    let http = reqwest::Client::new();
    let url = receiver.url("/hooks/in?x=1");

    let first = http
        .post(&url)
        .header("webhook-id", "msg_1")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "7");
    let second = http.post(&url).send().await.unwrap();
    assert_eq!(second.status(), 410);
    assert_eq!(second.headers()["x-test"], "1");
    assert_eq!(second.text().await.unwrap(), "gone");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 204);

    let got = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].header("webhook-id"), Some("msg_1"));
    assert_eq!(&got[0].body[..], b"{\"a\":1}");
    assert_eq!(
        got[0].uri.path_and_query().unwrap().as_str(),
        "/hooks/in?x=1"
    );
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [503, 410, 204]
    );
    receiver.shutdown().await;
}

#[tokio::test]
async fn delays_trigger_client_timeouts() {
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.push(ScriptedResponse::ok().delay(Duration::from_millis(800)));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = http.get(receiver.url("/")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(700));
}

#[tokio::test]
async fn wait_for_returns_what_arrived_when_time_runs_out() {
    let receiver = HttpReceiver::start().await.unwrap();
    let got = receiver.wait_for(1, Duration::from_millis(100)).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_flaky_receiver_fails_its_pattern_or_its_fraction() {
    let receiver = HttpReceiver::start().await.unwrap();
    let client = reqwest::Client::new();
    let codes = |n: usize| {
        let (client, url) = (client.clone(), receiver.url("/hook"));
        async move {
            let mut codes = Vec::new();
            for _ in 0..n {
                codes.push(client.post(&url).send().await.unwrap().status().as_u16());
            }
            codes
        }
    };
    // The script still comes first.
    receiver.push(ScriptedResponse::status(418));
    receiver.fail_pattern(
        vec![true, true, false, false, false],
        ScriptedResponse::status(503),
    );
    assert_eq!(
        codes(11).await,
        [418, 503, 503, 200, 200, 200, 503, 503, 200, 200, 200]
    );
    receiver.fail_fraction(0.4, ScriptedResponse::status(500), 7);
    let drawn = codes(500).await;
    let failed = drawn.iter().filter(|c| **c == 500).count();
    assert!((150..250).contains(&failed), "{failed} of 500 failed");
    assert!(drawn.iter().all(|c| matches!(c, 200 | 500)));
    receiver.fail_fraction(0.4, ScriptedResponse::status(500), 7);
    assert_eq!(
        codes(500).await,
        drawn,
        "the same seed fails the same requests"
    );
    receiver.shutdown().await;
}
