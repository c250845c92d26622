use crate::service::setup;
use serde_json::{Value, json};

pub(crate) async fn serve(s: &crate::service::Setup) -> String {
    let app = neo_orgs::http::router(s.orgs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// The JSON body of a GET of `url`.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn the_router_serves_the_lifecycle_with_proper_status_codes() {
    let s = setup().await;
    let base = serve(&s).await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/organizations"))
        .header("x-actor", "alice")
        .json(
            &json!({ "name": "Acme Widgets", "country": "DE", "website": "https://acme.example" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let org: Value = created.json().await.unwrap();
    assert_eq!(org["slug"], "acme-widgets");
    assert_eq!(
        location,
        format!("/organizations/{}", org["id"].as_str().unwrap())
    );

    let got: Value = get_json(&http, format!("{base}{location}")).await;
    assert_eq!(got, org);
    let by_slug = http
        .get(format!("{base}/organizations/by-slug/acme-widgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_slug.status(), 200);

    let verified: Value = http
        .post(format!("{base}{location}/verify"))
        .json(&json!({ "version": 1, "documents": ["kyc-1"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (verified["status"].as_str(), verified["version"].as_i64()),
        (Some("active"), Some(2))
    );
    let renamed = http
        .patch(format!("{base}{location}"))
        .json(&json!({ "version": 2, "name": "Acme Widgets GmbH", "primary_color": "#FF0000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    // The same version again is stale.
    let stale = http
        .patch(format!("{base}{location}"))
        .json(&json!({ "version": 2, "name": "Late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(stale, 409).await["kind"], "conflict");
    let suspended = http
        .post(format!("{base}{location}/suspend"))
        .json(&json!({ "version": 3, "reason": "unpaid" }))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    let found: Value = get_json(&http, format!("{base}/organizations?q=widgets&count=true")).await;
    assert_eq!(found["total"], 1);
    let by_offset: Value = get_json(
        &http,
        format!("{base}/organizations?q=widgets&offset=0&limit=5"),
    )
    .await;
    assert_eq!(by_offset["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_offset["next_offset"], Value::Null);
    let deleted = http
        .delete(format!("{base}{location}?version=4"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    problem(
        http.get(format!("{base}{location}")).send().await.unwrap(),
        404,
    )
    .await;
    let restored = http
        .post(format!("{base}{location}/restore"))
        .json(&json!({ "version": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
}

#[tokio::test]
async fn bad_requests_get_problems_and_write_nothing() {
    let s = setup().await;
    let base = serve(&s).await;
    let http = reqwest::Client::new();
    let post = |body: reqwest::Body| {
        http.post(format!("{base}/organizations"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    problem(post("{not json".into()).await.unwrap(), 400).await;
    problem(post(r#"{"name": 42}"#.into()).await.unwrap(), 422).await;
    problem(
        post(r#"{"name": "A", "admin": true}"#.into())
            .await
            .unwrap(),
        422,
    )
    .await;
    problem(
        post(format!(r#"{{"name": "{}"}}"#, "x".repeat(100_000)).into())
            .await
            .unwrap(),
        413,
    )
    .await;
    for bad in [
        json!({ "name": "Acme", "slug": "Not A Slug" }),
        json!({ "name": "Acme", "slug": "acme'; DROP TABLE organizations; --" }),
        json!({ "name": "Acme", "country": "XX" }),
        json!({ "name": "Acme", "website": "http://plain.example" }),
        json!({ "name": "" }),
        json!({ "name": "Deep", "metadata": { "a": { "b": { "c": { "d": { "e": { "f": { "g": { "h": { "i": 1 } } } } } } } } } }),
    ] {
        let response = post(bad.to_string().into()).await.unwrap();
        let body = problem(response, 422).await;
        assert_eq!(body["kind"], "validation", "{bad}: {body}");
    }
    let no_type = http
        .post(format!("{base}/organizations"))
        .body(r#"{"name": "Acme"}"#)
        .send()
        .await
        .unwrap();
    problem(no_type, 415).await;
    for (path, status) in [
        ("/organizations/not-an-id", 400),
        ("/organizations?limit=abc", 400),
        ("/organizations?cursor=abc&offset=10", 400),
        ("/organizations?q=x&cursor=%27%3B--", 422),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        problem(response, status).await;
    }
    // Injection in the search text is just text.
    let injected: Value = http
        .get(format!("{base}/organizations"))
        .query(&[("q", "' OR 1=1; DROP TABLE organizations; --")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(injected["items"], json!([]));
    // Nothing was written by any of it.
    let all: Value = get_json(&http, format!("{base}/organizations?count=true")).await;
    assert_eq!(all["total"], 0);
    // A duplicate slug is a conflict.
    let first = post(r#"{"name": "Acme"}"#.into()).await.unwrap();
    assert_eq!(first.status(), 201);
    let again = problem(post(r#"{"name": "Acme"}"#.into()).await.unwrap(), 409).await;
    assert_eq!(again["kind"], "already_exists");
    let unknown = http
        .post(format!(
            "{base}/organizations/{}/explode",
            neo_core::OrganizationId::new()
        ))
        .json(&json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    problem(unknown, 404).await;
}
