//! The console in headless Chromium (Debian's `chromium`, driven through `chromedriver` over
//! WebDriver): every page against real rows, "Replay" on a dead delivery reaches the test
//! receiver, "Retry" on a dead job runs it again, "Pause" pauses the queue. Screenshots go to
//! `target/console-screenshots/`. Without chromium or chromedriver the test fails, saying how
//! to install them.

use crate::common::{TOKEN, setup};
use fantoccini::{Client, ClientBuilder, Locator};
use neo_events::{DeliveryStatus, NewEndpoint};
use neo_queue::{JobError, NewJob, OnDuplicate, Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const INSTALL: &str = "install Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` \
     (scripts/lib.sh ensure_servers_installed does it for scripts/test)";

/// chromedriver on a free port and a headless Chromium session on it.
struct Browser {
    client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    async fn start() -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("chromium is not installed: {INSTALL}"));
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver could not start ({e}): {INSTALL}"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() > Duration::from_secs(20) => {
                    panic!("no Chromium session through chromedriver after 20 s ({e}): {INSTALL}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
            .join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn open(&self, url: &str) -> String {
        self.client.goto(url).await.unwrap();
        self.client.source().await.unwrap()
    }
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_replay_and_retry_in_headless_chromium() {
    let s = setup().await;
    // A receiver that fails the first attempt (the delivery goes dead: no retries) and then
    // accepts.
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.push(ScriptedResponse::status(500).body("down for maintenance"));
    receiver.set_default(ScriptedResponse::ok());
    let endpoint = s
        .endpoint(NewEndpoint::new(receiver.url("/hook")).description("billing <b>hooks</b>"))
        .await;
    // A job that fails its only attempt the first time and succeeds after a retry.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let worker = s
        .webhooks
        .handle(Worker::new(
            s.queue.clone(),
            WorkerConfig {
                poll_interval: Duration::from_millis(100),
                ..WorkerConfig::default()
            },
        ))
        .handle("report.build", move |_job| {
            let counted = Arc::clone(&counted);
            async move {
                match counted.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(JobError::Permanent("the report server said <no>".into())),
                    _ => Ok(()),
                }
            }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let mut uow = s.db.begin().await.unwrap();
    let job = NewJob::new("report.build", &serde_json::json!({ "month": "2026-11" }))
        .unwrap()
        .max_attempts(1);
    let job_id = job.id();
    s.queue
        .enqueue(&mut *uow, job, OnDuplicate::Skip)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    s.fan_out(
        serde_json::json!({ "name": "Acme <script>alert(1)</script>" }),
        None,
    )
    .await;
    until("the delivery to go dead", async || {
        s.webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Dead), 10)
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    until("the job to go dead", async || {
        s.queue
            .get(job_id)
            .await
            .unwrap()
            .is_some_and(|j| j.state == "dead")
    })
    .await;

    // The console on a real port, as the example service mounts it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/ops", listener.local_addr().unwrap());
    let app = s.operator();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    let c = &browser.client;
    // Without signing in: 401.
    let refused = browser.open(&format!("{base}/queues")).await;
    assert!(refused.contains("not signed in"), "{refused}");
    // Sign in with the token through the login form.
    browser.open(&format!("{base}/login")).await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("header")).await.unwrap();

    for (path, name, expect) in [
        ("", "overview", "Overview"),
        ("/queues", "queues", "report.build"),
        ("/webhooks", "webhooks", "billing &lt;b&gt;hooks&lt;/b&gt;"),
        ("/outbox", "outbox", "neo_events"),
        ("/cache", "cache", "Cache"),
        ("/database", "database", "Lock waits"),
    ] {
        let html = browser.open(&format!("{base}{path}")).await;
        assert!(html.contains(expect), "{path}: {html}");
        browser.screenshot(name).await;
    }

    // Replay the dead delivery from the endpoint page: the receiver gets it again.
    browser
        .open(&format!("{base}/webhooks/{}", endpoint.id))
        .await;
    browser.screenshot("endpoint-dead").await;
    c.find(Locator::Css("tr.delivery[data-status=dead] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let received = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 2, "the failed attempt and the replay");
    until("the replayed delivery to be delivered", async || {
        s.webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 10)
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    let page = browser
        .open(&format!("{base}/webhooks/{}", endpoint.id))
        .await;
    assert!(page.contains("data-status=\"delivered\""), "{page}");
    browser.screenshot("endpoint").await;
    let delivery = s
        .webhooks
        .deliveries(endpoint.id, None, 1)
        .await
        .unwrap()
        .remove(0);
    let detail = browser
        .open(&format!("{base}/deliveries/{}", delivery.id))
        .await;
    assert!(
        detail.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{detail}"
    );
    browser.screenshot("delivery").await;

    // Retry the dead job from the queues page: it runs again and is done.
    browser.open(&format!("{base}/queues")).await;
    c.find(Locator::Css(&format!("input[name=ids][value='{job_id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("button[value=retry]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the retried job to run", async || {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    until("the retried job to be done", async || {
        s.queue.get(job_id).await.unwrap().is_none()
    })
    .await;
    let after = browser.open(&format!("{base}/queues")).await;
    assert!(after.contains("No dead letters."), "{after}");
    browser.screenshot("queues-after-retry").await;

    // Pause the queue from the queues page: the page shows it paused and claims stop.
    c.find(Locator::Css("tr.queue[data-queue=neo_queue] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("tr.queue[data-paused=true] .paused"))
        .await
        .unwrap();
    assert!(s.queue.pause_status().await.unwrap().is_some());
    browser.screenshot("queues-paused").await;
    c.find(Locator::Css("tr.queue[data-queue=neo_queue] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("tr.queue[data-paused=false]"))
        .await
        .unwrap();
    assert!(s.queue.pause_status().await.unwrap().is_none());

    browser.client.clone().close().await.unwrap();
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}
