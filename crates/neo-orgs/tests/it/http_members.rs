//! The membership and invitation routes, merged with the organization routes, with problem
//! details for refusals.

use crate::service::setup;
use neo_core::UserId;
use neo_orgs::{MembershipConfig, OrgConfig};
use serde_json::{Value, json};

#[tokio::test]
async fn members_and_invitations_over_http_with_problem_details() {
    let s = setup().await;
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let app = neo_orgs::http::router(s.orgs.clone()).merge(neo_orgs::http::members_router(members));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let org: Value = http
        .post(format!("{base}/organizations"))
        .json(&json!({ "name": "Http Members" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = org["id"].as_str().unwrap().to_owned();
    let alice = UserId::new();
    let put = http
        .put(format!("{base}/organizations/{org}/members/{alice}"))
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let can: Value = http
        .get(format!(
            "{base}/organizations/{org}/members/{alice}/can/members:invite"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(can, json!({ "allowed": true }));
    let page: Value = http
        .get(format!("{base}/organizations/{org}/members?limit=10"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["user"], alice.to_string());
    assert_eq!(page["items"][0]["role"], "admin");
    assert_eq!(page["next_cursor"], Value::Null);
    let orgs: Value = http
        .get(format!("{base}/users/{alice}/organizations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orgs["items"][0]["organization"], org);

    // Invite, accept once; the second accept and a forged token are problems.
    let invited = http
        .post(format!("{base}/organizations/{org}/invitations"))
        .header("x-actor", "alice")
        .json(&json!({ "email": "bob@example.com", "role": "member" }))
        .send()
        .await
        .unwrap();
    assert_eq!(invited.status(), 201);
    let invited: Value = invited.json().await.unwrap();
    let token = invited["token"].as_str().unwrap().to_owned();
    let id = invited["invitation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(invited["invitation"]["status"], "pending");
    let bob = UserId::new();
    let accept = |token: String| {
        http.post(format!("{base}/invitations/accept"))
            .json(&json!({ "token": token, "user": bob.to_string() }))
            .send()
    };
    let accepted: Value = accept(token.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    let problem = |status: u16| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            response.json::<Value>().await.unwrap()
        }
    };
    let used = problem(409)(accept(token).await.unwrap()).await;
    assert!(
        used["detail"].as_str().unwrap().contains("already used"),
        "{used}"
    );
    let forged = problem(401)(accept("forged".to_owned()).await.unwrap()).await;
    assert_eq!(forged["kind"], "unauthorized");
    let got: Value = http
        .get(format!("{base}/invitations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["accepted_by"], bob.to_string());
    let revoke = http
        .post(format!("{base}/invitations/{id}/revoke"))
        .send()
        .await
        .unwrap();
    problem(409)(revoke).await;
    let bad_user = http
        .put(format!("{base}/organizations/{org}/members/not-a-user"))
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    problem(400)(bad_user).await;
    let bad_role = http
        .put(format!("{base}/organizations/{org}/members/{bob}"))
        .json(&json!({ "role": "emperor" }))
        .send()
        .await
        .unwrap();
    problem(422)(bad_role).await;
}
