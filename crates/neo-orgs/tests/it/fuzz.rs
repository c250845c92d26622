//! The bad-input sweep of the router: generated malformed JSON, wrong types, injection
//! strings, oversized bodies and odd paths against every endpoint, over real HTTP on a real
//! PostgreSQL. Every answer is a typed 4xx problem (never a 5xx, never a panic), and a
//! refused request writes nothing: the organizations, their audit trail and the outbox keep
//! their row counts.

use crate::service::setup;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Strings that have broken services: SQL and LIKE metacharacters, quotes, NUL, control and
/// bidi characters, path tricks, a 100 KiB string.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'; DROP TABLE neo_orgs.organizations; --".to_owned()),
        Just("\" OR 1=1 --".to_owned()),
        Just("%_\\%".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{202e}evil".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("x".repeat(100 * 1024)),
        Just("-1".to_owned()),
        Just("9223372036854775808".to_owned()),
        any::<String>(),
        "[\\x00-\\x7f]{0,40}",
    ]
}

/// [`nasty`] strings short enough for a URL (paths and query strings), with a 4,000
/// character one for length checks.
fn nasty_in_url() -> impl Strategy<Value = String> {
    nasty().prop_map(|text| {
        if text.len() > 4_000 {
            "y".repeat(4_000)
        } else {
            text
        }
    })
}

/// A JSON value of any shape, with nasty strings in it.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        nasty().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("slug".to_owned()),
                    Just("version".to_owned()),
                    Just("metadata".to_owned()),
                    Just("website".to_owned()),
                    Just("country".to_owned()),
                    Just("tax_id".to_owned()),
                    Just("primary_color".to_owned()),
                    Just("reason".to_owned()),
                    Just("documents".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: JSON of any shape, or bytes that are not JSON at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        nasty().prop_map(String::into_bytes),
        Just(b"{\"name\":".to_vec()),
        Just(vec![b'['; 10_000]),
        Just(vec![b' '; 70 * 1024]),
    ]
}

#[derive(Debug, Clone)]
enum Call {
    Create(Vec<u8>),
    Patch(String, Vec<u8>),
    Lifecycle(String, String, Vec<u8>),
    Search(Vec<(String, String)>),
    Get(String),
    BySlug(String),
    Delete(String, String),
}

fn call(known: String) -> impl Strategy<Value = Call> {
    let id = prop_oneof![Just(known), nasty_in_url()];
    let action = prop_oneof![
        Just("verify".to_owned()),
        Just("suspend".to_owned()),
        Just("archive".to_owned()),
        Just("restore".to_owned()),
        nasty_in_url(),
    ];
    let param = (
        prop_oneof![
            Just("q".to_owned()),
            Just("limit".to_owned()),
            Just("cursor".to_owned()),
            Just("offset".to_owned()),
            Just("count".to_owned()),
            Just("sort".to_owned()),
        ],
        nasty_in_url(),
    );
    prop_oneof![
        body().prop_map(Call::Create),
        (id.clone(), body()).prop_map(|(i, b)| Call::Patch(i, b)),
        (id.clone(), action, body()).prop_map(|(i, a, b)| Call::Lifecycle(i, a, b)),
        prop::collection::vec(param, 0..4).prop_map(Call::Search),
        id.clone().prop_map(Call::Get),
        nasty_in_url().prop_map(Call::BySlug),
        (id, nasty_in_url()).prop_map(|(i, v)| Call::Delete(i, v)),
    ]
}

async fn counts(db: &neo_db::Db) -> (i64, i64, i64) {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    (
        count("neo_orgs.organizations").await,
        count("neo_orgs.organization_audit").await,
        count("neo_events.outbox").await,
    )
}

#[test]
fn every_endpoint_answers_bad_input_with_a_4xx_problem_and_writes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, base, known) = rt.block_on(async {
        let s = setup().await;
        let base = crate::http::serve(&s).await;
        let acme = s
            .orgs
            .create(
                "fuzz",
                neo_orgs::NewOrganization::new("Acme", neo_core::Slug::parse("acme").unwrap()),
            )
            .await
            .unwrap();
        (s, base, acme.id().to_string())
    });
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::new());
    runner
        .run(&call(known), |call| {
            let (status, problem, before, after) = rt.block_on(async {
                let before = counts(s.pg_parts().0).await;
                let url = |path: &str| format!("{base}{path}");
                let enc = |text: &str| {
                    text.bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect::<String>()
                };
                let request = match &call {
                    Call::Create(body) => http.post(url("/organizations")).body(body.clone()),
                    Call::Patch(id, body) => http
                        .patch(url(&format!("/organizations/{}", enc(id))))
                        .body(body.clone()),
                    Call::Lifecycle(id, action, body) => http
                        .post(url(&format!("/organizations/{}/{}", enc(id), enc(action))))
                        .body(body.clone()),
                    Call::Search(params) => http.get(url("/organizations")).query(params),
                    Call::Get(id) => http.get(url(&format!("/organizations/{}", enc(id)))),
                    Call::BySlug(slug) => {
                        http.get(url(&format!("/organizations/by-slug/{}", enc(slug))))
                    }
                    Call::Delete(id, version) => http
                        .delete(url(&format!("/organizations/{}", enc(id))))
                        .query(&[("version", version)]),
                };
                let response = request
                    .header("content-type", "application/json")
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let problem = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|c| c == "application/problem+json");
                (status, problem, before, counts(s.pg_parts().0).await)
            });
            *statuses.lock().unwrap().entry(status).or_insert(0) += 1;
            prop_assert!(status < 500, "{call:?} answered {status}");
            if status >= 400 {
                prop_assert!(problem, "{call:?}: a {status} without a problem body");
                prop_assert_eq!(before, after, "{:?} was refused but wrote", call);
            }
            Ok(())
        })
        .unwrap();
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.keys().any(|s| *s >= 400),
        "the sweep reached the refusals: {statuses:?}"
    );
    // Searching with injection strings is searching for text, and the tables are intact.
    let after = rt.block_on(counts(s.pg_parts().0));
    assert!(after.0 >= 1, "the organizations table is still there");
    // A schema name from configuration reaches SQL only through the one quoting function.
    let bad_schema = rt.block_on(async {
        neo_orgs::OrganizationService::new(
            s.pg_parts().0,
            s.pg_parts().1.clone(),
            None,
            neo_orgs::OrgConfig {
                schema: "x; DROP SCHEMA neo_orgs CASCADE".to_owned(),
                ..neo_orgs::OrgConfig::default()
            },
        )
        .unwrap_err()
    });
    assert_eq!(
        neo_core::HasErrorKind::kind(&bad_schema),
        neo_core::ErrorKind::Validation
    );
}

proptest! {
    /// The crate's own parsers take any text: a value or a typed validation error.
    #[test]
    fn the_parsers_take_any_text_without_panicking(text in any::<String>()) {
        for result in [
            neo_orgs::Color::parse(&text).map(|_| ()),
            neo_orgs::OrgStatus::parse(&text).map(|_| ()),
        ] {
            if let Err(error) = result {
                prop_assert_eq!(neo_core::HasErrorKind::kind(&error), neo_core::ErrorKind::Validation);
            }
        }
    }
}
