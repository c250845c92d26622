//! Webhook delivery to a flaky receiver (failing a fraction p ≤ 0.5 of requests, at random or
//! 2 of every 5): the endpoint breaker must not throttle it. For each p, the attempts per
//! second a steady feed gets with the default breaker and with short windows (the last
//! second, open for 1 s) stay at least 0.8 of the same run without a breaker, and every
//! message is delivered once its retries allow.

use neo_benches::flaky::{Breaker, Flakiness, FlakyRun, run};
use std::time::Duration;

const FEED: Duration = Duration::from_secs(2);

async fn flaky_receiver_keeps_its_traffic(flakiness: Flakiness, tag: &str) {
    let test_db = neo_testkit::postgres().await;
    let url = test_db.url();
    let baseline = run(url, &format!("{tag}_off"), flakiness, Breaker::Off, FEED).await;
    let mut seen: Vec<(Breaker, FlakyRun)> = vec![(Breaker::Off, baseline)];
    for breaker in [Breaker::Defaults, Breaker::Short] {
        let prefix = format!("{tag}_{breaker:?}").to_lowercase();
        seen.push((breaker, run(url, &prefix, flakiness, breaker, FEED).await));
    }
    for (breaker, figures) in &seen {
        println!(
            "flaky receiver ({flakiness}), breaker {breaker:?}: {:.0} attempts/s ({:.2} of no \
             breaker), {}/{} delivered, drained {:.2} s after the feed",
            figures.attempts_per_second,
            figures.attempts_per_second / baseline.attempts_per_second,
            figures.delivered,
            figures.messages,
            figures.drained_in.as_secs_f64(),
        );
    }
    // The feed is 200 messages/s; a fraction p failing asks for about 200 / (1 - p)
    // attempts/s: the baseline must have kept up for the comparison to mean anything.
    let expected = 200.0 / (1.0 - flakiness.fraction());
    assert!(
        baseline.attempts_per_second >= 0.7 * expected,
        "the run without a breaker got {:.0} attempts/s, expected about {expected:.0}",
        baseline.attempts_per_second
    );
    for (breaker, figures) in &seen {
        assert_eq!(
            figures.delivered, figures.messages,
            "breaker {breaker:?}: every message is delivered once the schedule allows"
        );
        assert!(
            figures.attempts_per_second >= 0.8 * baseline.attempts_per_second,
            "breaker {breaker:?}: {:.0} attempts/s against {:.0} without a breaker",
            figures.attempts_per_second,
            baseline.attempts_per_second
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_two_of_every_five_requests_keeps_its_traffic() {
    flaky_receiver_keeps_its_traffic(Flakiness::TwoOfFive, "flaky_2of5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_a_fifth_at_random_keeps_its_traffic() {
    flaky_receiver_keeps_its_traffic(Flakiness::Random(0.2), "flaky_p20").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_two_fifths_at_random_keeps_its_traffic() {
    flaky_receiver_keeps_its_traffic(Flakiness::Random(0.4), "flaky_p40").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_half_at_random_keeps_its_traffic() {
    flaky_receiver_keeps_its_traffic(Flakiness::Random(0.5), "flaky_p50").await;
}
