//! The domain claim and verification routes, merged with the organization routes, with
//! problem details for refusals; the DNS server is a real one (in-process hickory).

use crate::dns_server::ZoneServer;
use crate::domains::queue;
use crate::service::Setup;
use neo_orgs::{
    DnsConfig, DomainVerification, DomainVerificationConfig, ManualReview, MembershipConfig,
    OrgConfig, OrgVerifications,
};
use serde_json::{Value, json};

// Through the HTTP server's own tasks, which carry no tenant: the modes without tenant
// isolation (the library calls under it are covered in `domains` and `verifications`).
mod postgres {
    #[tokio::test]
    async fn domain_claims_and_verifications_over_http_with_problem_details() {
        super::over_http(super::Setup::postgres().await).await;
    }
}
mod pgbouncer {
    #[tokio::test]
    async fn domain_claims_and_verifications_over_http_with_problem_details() {
        super::over_http(super::Setup::pgbouncer().await).await;
    }
}

async fn problem(response: reqwest::Response, status: u16, kind: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], kind, "{body}");
}

async fn over_http(s: Setup) {
    let server = ZoneServer::start().await;
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let domains = DomainVerification::new(
        members.clone(),
        queue(&s).await,
        server.resolver(DnsConfig::default()),
        DomainVerificationConfig::default(),
    )
    .unwrap();
    let verifications = OrgVerifications::new(members, queue(&s).await, ManualReview);
    let app = neo_orgs::http::router(s.orgs.clone())
        .merge(neo_orgs::http::verification_router(domains, verifications));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let org: Value = http
        .post(format!("{base}/organizations"))
        .json(&json!({ "name": "Http Verify" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = org["id"].as_str().unwrap().to_owned();

    // Domains.
    let claimed = http
        .post(format!("{base}/organizations/{org}/domain-claims"))
        .json(&json!({ "domain": "http.example" }))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 201);
    let claimed: Value = claimed.json().await.unwrap();
    let txt = claimed["txt_record"].as_str().unwrap().to_owned();
    assert_eq!(claimed["claim"]["domain"], "http.example");
    let check = format!("{base}/organizations/{org}/domain-claims/http.example/check");
    problem(http.post(&check).send().await.unwrap(), 409, "conflict").await;
    problem(
        http.post(format!("{base}/organizations/{org}/domain-claims"))
            .json(&json!({ "domain": "not a domain" }))
            .send()
            .await
            .unwrap(),
        400,
        "validation",
    )
    .await;
    server.add_txt("http.example", &txt).await;
    let verified: Value = http
        .post(&check)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verified["verified_at"].is_string(), "{verified}");
    let joined = http
        .put(format!(
            "{base}/organizations/{org}/domain-claims/http.example/auto-join"
        ))
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 200);
    let user = neo_core::UserId::new();
    let joined: Value = http
        .post(format!("{base}/users/{user}/auto-join"))
        .json(&json!({ "email": "dana@http.example" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(joined, json!({ "joined": [org] }));

    // Verifications.
    let submitted = http
        .post(format!("{base}/organizations/{org}/verifications"))
        .json(&json!({ "documents": [{ "id": "doc-1", "kind": "registry_extract" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 201);
    let submitted: Value = submitted.json().await.unwrap();
    assert_eq!(submitted["status"], "submitted");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let decision = format!("{base}/verifications/{id}/decision");
    problem(
        http.post(&decision)
            .json(&json!({ "verdict": "verified" }))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let review: Value = http
        .post(format!("{base}/verifications/{id}/review"))
        .header("x-actor", "carol")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(review["status"], "in_review");
    let decided: Value = http
        .post(&decision)
        .header("x-actor", "carol")
        .json(&json!({ "verdict": "rejected", "reason": "expired extract" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(decided["status"], "rejected");
    let read: Value = http
        .get(format!("{base}/verifications/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["history"].as_array().unwrap().len(), 3);
    assert_eq!(read["history"][2]["actor"], "carol");
    problem(
        http.get(format!("{base}/verifications/{}", uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    problem(
        http.post(format!("{base}/organizations/{org}/verifications"))
            .json(&json!({ "documents": [] }))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
}
