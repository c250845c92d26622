//! An example host service built from neo-commons: the organizations API (PostgreSQL, tiered
//! cache on Redis) whose domain events go through the outbox to webhook endpoints, delivered by
//! a neo-queue worker.
//!
//! ```text
//! orgs-service serve   # the API on NEO_ORGS_SERVICE_ADDR (default 127.0.0.1:8080) until Ctrl-C
//! orgs-service demo    # the API on a free port, driven through a scripted scenario
//! ```
//!
//! Servers: `NEO_DATABASE_URL` and `NEO_REDIS_URL` (`scripts/demo` starts a throwaway pair).
#![allow(clippy::print_stdout, reason = "a demo prints what happens")]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use neo_commons::core::ExposeSecret;
use neo_commons::events::{AddressPolicy, NewEndpoint, Verifier};
use orgs_service::{BoxError, Roles, Service, ServiceConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match std::env::args().nth(1).as_deref() {
        // Boxed: the scenario holds the composed service, a future too large for the stack.
        Some("demo") => Box::pin(demo()).await,
        Some("serve") | None => serve().await,
        Some(other) => Err(format!("unknown command {other:?}: use serve or demo").into()),
    }
}

async fn serve() -> Result<(), BoxError> {
    let addr = std::env::var("NEO_ORGS_SERVICE_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let service = Service::compose(ServiceConfig::from_env()?).await?;
    let metrics = neo_commons::observe::prometheus::install(&Default::default())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("organizations API on http://{addr} (Prometheus: /metrics); Ctrl-C stops it");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    service
        .run(Roles::all(listener).with_metrics(metrics), stopped)
        .await
}

/// A webhook receiver for the demo: records each delivery with its headers.
async fn receive(
    State(sink): State<mpsc::UnboundedSender<(HeaderMap, String)>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let _ = sink.send((headers, body));
    StatusCode::NO_CONTENT
}

async fn demo() -> Result<(), BoxError> {
    let mut config = ServiceConfig::from_env()?;
    // The demo's receiver listens on loopback, over plain HTTP.
    config.webhooks.addresses = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    config.webhooks.require_https = false;
    // The operations console at /ops, behind NEO_CONSOLE_TOKEN or a token for this run.
    let console_token = config
        .console_token
        .get_or_insert_with(|| {
            format!("demo-console-{}-{}", std::process::id(), token_suffix()).into()
        })
        .expose_secret()
        .to_owned();
    let service = Service::compose(config).await?;

    // 1. A receiver, and an endpoint subscribed to every organization event.
    let (sink, mut deliveries) = mpsc::unbounded_channel();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", receiver.local_addr()?);
    let receiver_app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(sink);
    tokio::spawn(async move { axum::serve(receiver, receiver_app).await });
    let endpoint = service
        .webhooks
        .create_endpoint(NewEndpoint::new(&hook_url).subscribe("organization.*"))
        .await?;
    println!("webhook endpoint {} → {hook_url}", endpoint.id);

    // 2. The service on a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = watch::channel(false);
    let cache = service.orgs.cache().cloned();
    let running = tokio::spawn(async move { service.run(Roles::all(listener), stopped).await });
    println!("organizations API on {base}\n");
    let console = reqwest::Client::new()
        .get(format!("{base}/ops/webhooks"))
        .bearer_auth(&console_token)
        .send()
        .await?
        .error_for_status()?;
    println!(
        "console   {base}/ops answers {} with its token\n",
        console.status()
    );

    // 3. The scenario, over HTTP.
    let http = reqwest::Client::new();
    let slug = format!("acme-{}", std::process::id());
    let created: Value = ok_json(
        http.post(format!("{base}/organizations"))
            .header("x-actor", "demo")
            .json(&json!({ "name": "Acme Widgets", "slug": slug, "country": "DE" })),
    )
    .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "created   {} {} (status {}, version {})",
        id, created["slug"], created["status"], created["version"]
    );

    for round in 1..=2 {
        let started = std::time::Instant::now();
        http.get(format!("{base}/organizations/{id}"))
            .send()
            .await?
            .error_for_status()?;
        println!("get #{round}    {:?} over HTTP", started.elapsed());
    }
    if let Some(cache) = &cache {
        let stats = neo_commons::cache::Cache::stats(cache);
        println!(
            "cache     L1 hits {}, L1 misses {}, L2 hits {}",
            stats.l1_hits, stats.l1_misses, stats.l2_hits
        );
    }
    let found: Value =
        ok_json(http.get(format!("{base}/organizations?q=widgets&count=true"))).await?;
    println!("search    \"widgets\" → {} match(es)", found["total"]);
    let verified: Value = ok_json(
        http.post(format!("{base}/organizations/{id}/verify"))
            .json(&json!({ "version": 1, "documents": ["kyc-0001"] })),
    )
    .await?;
    println!(
        "verified  status {}, version {}",
        verified["status"], verified["version"]
    );
    let updated: Value =
        ok_json(http.patch(format!("{base}/organizations/{id}")).json(
            &json!({ "version": 2, "name": "Acme Widgets GmbH", "primary_color": "#0055ff" }),
        ))
        .await?;
    println!(
        "updated   name {}, version {}",
        updated["name"], updated["version"]
    );
    let problem = problem_json(
        http.patch(format!("{base}/organizations/{id}"))
            .json(&json!({ "version": 2, "name": "Too Late" })),
    )
    .await?;
    println!("stale     {} {}", problem["status"], problem["detail"]);
    let suspended: Value = ok_json(
        http.post(format!("{base}/organizations/{id}/suspend"))
            .json(&json!({ "version": 3, "reason": "unpaid invoices" })),
    )
    .await?;
    println!(
        "suspended status {}, version {}\n",
        suspended["status"], suspended["version"]
    );

    // 4. The webhooks: one per event, each signature checked as a receiver would.
    let verifier = Verifier::new(vec![endpoint.secret().clone()]);
    let expected = 5; // created, verified, renamed, branding updated, suspended
    for _ in 0..expected {
        let (event, webhook_id) = next_webhook(&mut deliveries, &verifier).await?;
        println!(
            "webhook   {:<36} signature verified (webhook-id {webhook_id})",
            event["type"]
        );
    }

    // 5. Members: invite by e-mail, accept with the token, check a permission (cached).
    let invited: Value = ok_json(
        http.post(format!("{base}/organizations/{id}/invitations"))
            .header("x-actor", "demo")
            .json(&json!({ "email": "jane@acme.example", "role": "admin" })),
    )
    .await?;
    let jane = neo_commons::core::UserId::new();
    let accepted: Value = ok_json(
        http.post(format!("{base}/invitations/accept"))
            .json(&json!({ "token": invited["token"], "user": jane.to_string() })),
    )
    .await?;
    println!(
        "\ninvited   {} as {} → {}",
        accepted["email"], accepted["role"], accepted["status"]
    );
    let problem = problem_json(
        http.post(format!("{base}/invitations/accept"))
            .json(&json!({ "token": invited["token"], "user": jane.to_string() })),
    )
    .await?;
    println!("reused    {} {}", problem["status"], problem["detail"]);
    let can: Value = ok_json(http.get(format!(
        "{base}/organizations/{id}/members/{jane}/can/members:invite"
    )))
    .await?;
    println!("can       jane members:invite → {}", can["allowed"]);
    // A member added directly with a role, and what each role may do.
    let john = neo_commons::core::UserId::new();
    http.put(format!("{base}/organizations/{id}/members/{john}"))
        .json(&json!({ "role": "member" }))
        .send()
        .await?
        .error_for_status()?;
    let page: Value = ok_json(http.get(format!("{base}/organizations/{id}/members"))).await?;
    let roles: Vec<String> = page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|m| {
                    let who = if m["user"] == json!(jane.to_string()) {
                        "jane"
                    } else {
                        "john"
                    };
                    format!("{who} ({})", m["role"].as_str().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    println!("members   {}", roles.join(", "));
    let can: Value = ok_json(http.get(format!(
        "{base}/organizations/{id}/members/{john}/can/members:invite"
    )))
    .await?;
    println!("can       john members:invite → {}", can["allowed"]);

    // 6. A new organization proves who it is: a domain claimed by DNS, documents reviewed.
    let globex_slug = format!("globex-{}", std::process::id());
    let globex: Value = ok_json(
        http.post(format!("{base}/organizations"))
            .header("x-actor", "demo")
            .json(&json!({ "name": "Globex Corporation", "slug": globex_slug })),
    )
    .await?;
    let globex_id = globex["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "
created   {} {} (status {})",
        globex_id, globex["slug"], globex["status"]
    );
    let domain = format!("{globex_slug}.example");
    let issued: Value = ok_json(
        http.post(format!("{base}/organizations/{globex_id}/domain-claims"))
            .header("x-actor", "demo")
            .json(&json!({ "domain": domain })),
    )
    .await?;
    println!(
        "claimed   {domain}: publish TXT {:?} there",
        issued["txt_record"].as_str().unwrap_or_default()
    );
    let problem = problem_json(http.post(format!(
        "{base}/organizations/{globex_id}/domain-claims/{domain}/check"
    )))
    .await?;
    let claim: Value = ok_json(http.get(format!(
        "{base}/organizations/{globex_id}/domain-claims/{domain}"
    )))
    .await?;
    println!("check     {} {}", problem["status"], problem["detail"]);
    println!(
        "pending   verified_at {}, expires {}: the demo cannot publish DNS; the verification \
         job keeps checking until the claim expires",
        claim["verified_at"], claim["expires_at"]
    );
    let submitted: Value = ok_json(
        http.post(format!("{base}/organizations/{globex_id}/verifications"))
            .header("x-actor", "demo")
            .json(&json!({ "documents": [
            { "id": "doc-registry-0042", "kind": "registry_extract" },
            { "id": "doc-id-0007", "kind": "id_card" },
        ] })),
    )
    .await?;
    let verification = submitted["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "submitted verification {verification} with {} documents",
        submitted["documents"].as_array().map_or(0, Vec::len)
    );
    // The review: a person starts it, unless the review job (manual review: it only moves
    // the submission to `in_review`) already has.
    let review = http
        .post(format!("{base}/verifications/{verification}/review"))
        .header("x-actor", "reviewer@demo")
        .send()
        .await?;
    if review.status() == StatusCode::CONFLICT {
        println!("review    already started by the review job");
    } else {
        review.error_for_status()?;
    }
    let decided: Value = ok_json(
        http.post(format!("{base}/verifications/{verification}/decision"))
            .header("x-actor", "reviewer@demo")
            .json(&json!({ "verdict": "verified" })),
    )
    .await?;
    println!("decided   {}", decided["status"]);
    let record: Value = ok_json(http.get(format!("{base}/verifications/{verification}"))).await?;
    for step in record["history"].as_array().into_iter().flatten() {
        println!(
            "  history {:>11} → {:<10} by {}",
            step["from"].as_str().unwrap_or("-"),
            step["to"].as_str().unwrap_or_default(),
            step["actor"].as_str().unwrap_or_default()
        );
    }
    let now_verified: Value =
        ok_json(http.get(format!("{base}/organizations/{globex_id}"))).await?;
    println!(
        "verified  {} status {}, verified_at {}, documents {}, version {}",
        now_verified["slug"],
        now_verified["status"],
        now_verified["verification"]["verified_at"],
        now_verified["verification"]["documents"],
        now_verified["version"]
    );
    // Its events reach the webhook endpoint like the others (deliveries run concurrently, so
    // in any order): wait for both of the decision's.
    let mut seen: Vec<String> = Vec::new();
    while ![
        "organization.verified",
        "organization.verification_verified",
    ]
    .iter()
    .all(|wanted| seen.iter().any(|t| t == wanted))
    {
        let (event, _) = next_webhook(&mut deliveries, &verifier).await?;
        seen.push(event["type"].as_str().unwrap_or_default().to_owned());
    }
    println!(
        "webhooks  {} more, signatures verified: {}",
        seen.len(),
        seen.join(", ")
    );

    let _ = stop.send(true);
    running.await??;
    println!("\ndone: the service stopped cleanly");
    Ok(())
}

/// Sends `request` and decodes its JSON answer, which must be a success.
async fn ok_json(request: reqwest::RequestBuilder) -> Result<Value, BoxError> {
    Ok(request.send().await?.error_for_status()?.json().await?)
}

/// Sends `request`, which is to be refused, and decodes its problem document.
async fn problem_json(request: reqwest::RequestBuilder) -> Result<Value, BoxError> {
    Ok(request.send().await?.json().await?)
}

/// The next delivery to the demo's receiver (within 10 s), its signature checked as a
/// receiver would: the event and its `webhook-id`.
async fn next_webhook(
    deliveries: &mut mpsc::UnboundedReceiver<(HeaderMap, String)>,
    verifier: &Verifier,
) -> Result<(Value, String), BoxError> {
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .map_err(|_| "a webhook did not arrive within 10 s")?
        .ok_or("the receiver stopped")?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verifier.verify_headers(
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        body.as_bytes(),
    )?;
    let event: Value = serde_json::from_str(&body)?;
    Ok((event, header("webhook-id").unwrap_or_default().to_owned()))
}

/// Nanoseconds of the clock, to make the demo's console token unguessable enough for a demo.
fn token_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
