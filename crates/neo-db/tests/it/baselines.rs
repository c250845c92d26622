//! Query baselines on a real `pg_stat_statements`: a query made slower (its index dropped)
//! is listed as a regression and exported as gauges. Direct and through PgBouncer in
//! transaction mode (the statements then run unnamed, each in its own transaction, and
//! `pg_stat_statements` counts them under the same normalized text).

use crate::setup;
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use neo_db::diagnostics::{BaselineConfig, QueryBaselines};
use neo_db::{Db, Error};
use neo_testkit::PgRoute;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keeps the last value set on each gauge, by name and labels.
#[derive(Default)]
struct Gauges(Arc<Mutex<BTreeMap<String, f64>>>);

struct Slot(Arc<Mutex<BTreeMap<String, f64>>>, String);

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

impl Recorder for Gauges {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Gauge::from_arc(Arc::new(Slot(Arc::clone(&self.0), name)))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `sql` with `$1` = 0, 1, 2, … `times` times, as the route allows (a transaction and
/// an unnamed statement behind a transaction pooler).
async fn run(db: &Db, sql: &'static str, times: usize) {
    for n in 0..times {
        let mut conn = db.statement_connection().await.unwrap();
        db.statement(sql)
            .bind(i32::try_from(n % 1000).unwrap())
            .execute(&mut *conn)
            .await
            .unwrap();
        conn.finish().await.unwrap();
    }
}

/// A statement without parameters, as a simple query (safe behind any pooler).
async fn simple(db: &Db, sql: &'static str) {
    sqlx::raw_sql(sql).execute(db.pool()).await.unwrap();
}

async fn a_query_slowed_by_a_dropped_index_is_listed_and_exported(route: PgRoute) {
    let (_t, db) = setup(
        route,
        &[
            "CREATE EXTENSION pg_stat_statements",
            "CREATE TABLE items (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int4 NOT NULL, pad text NOT NULL)",
            "INSERT INTO items (v, pad) SELECT g % 100000, repeat('x', 40) FROM generate_series(1, 300000) AS g",
            "CREATE INDEX items_v ON items (v)",
            "ANALYZE items",
        ],
    )
    .await;
    let config = BaselineConfig {
        table: "ops.query_baselines".into(),
        min_calls: 10,
        ..BaselineConfig::default()
    };
    simple(&db, "CREATE SCHEMA ops").await;
    let baselines = QueryBaselines::install(&db, config).await.unwrap();
    let missing = baselines.compare("v1").await.unwrap_err();
    assert!(
        matches!(
            missing,
            Error::Invalid {
                what: "baseline",
                ..
            }
        ),
        "{missing:?}"
    );

    const LOOKUP: &str = "SELECT count(*) FROM items WHERE v = $1";
    const STEADY: &str = "SELECT $1::int4 + 1";
    run(&db, LOOKUP, 50).await;
    run(&db, STEADY, 50).await;
    let captured = baselines.capture("v1").await.unwrap();
    assert!(captured >= 2, "{captured}");
    // Capturing again replaces the baseline of that name.
    assert!(baselines.capture("v1").await.unwrap() >= captured);

    // Same statements, no change: nothing regressed.
    run(&db, LOOKUP, 20).await;
    run(&db, STEADY, 20).await;
    assert_eq!(baselines.compare("v1").await.unwrap(), vec![]);
    baselines.capture("v1").await.unwrap();

    // The index goes: every lookup now scans 300k rows.
    simple(&db, "DROP INDEX items_v").await;
    run(&db, LOOKUP, 20).await;
    run(&db, STEADY, 20).await;
    let regressions = baselines.compare("v1").await.unwrap();
    assert_eq!(regressions.len(), 1, "{regressions:#?}");
    let slow = &regressions[0];
    assert!(slow.query.contains("FROM items WHERE v = $1"), "{slow:?}");
    assert!(slow.ratio >= 5.0, "{slow:?}");
    assert_eq!(slow.calls, 20);
    assert!(slow.baseline_calls >= 70, "{slow:?}");
    assert!(slow.mean >= Duration::from_millis(1) && slow.mean > slow.baseline_mean);
    assert!(
        (slow.rows_per_call - 1.0).abs() < f64::EPSILON,
        "count(*) returns one row"
    );
    assert!((slow.baseline_rows_per_call - 1.0).abs() < f64::EPSILON);
    // `top` lists the statements by total time with the same comparison, regressed or not.
    let top = baselines.top("v1", 50).await.unwrap();
    assert!(top.windows(2).all(|w| w[0].total >= w[1].total), "{top:#?}");
    let lookup = top.iter().find(|t| t.queryid == slow.queryid).unwrap();
    let figures = lookup.baseline.as_ref().unwrap();
    assert!(figures.regressed, "{lookup:?}");
    assert_eq!(figures.calls_since, 20);
    assert!(
        (figures.ratio.unwrap() - slow.ratio).abs() < 1e-9,
        "{lookup:?}"
    );
    assert_eq!(figures.mean, slow.baseline_mean);
    let steady = top
        .iter()
        .find(|t| t.query.contains("+ $2") || t.query.contains("::int4 +"))
        .unwrap_or_else(|| panic!("the steady statement in {top:#?}"));
    assert!(!steady.baseline.as_ref().unwrap().regressed, "{steady:?}");
    assert!(
        baselines
            .top("never-captured", 5)
            .await
            .unwrap()
            .iter()
            .all(|t| t.baseline.is_none())
    );

    let gauges = Gauges::default();
    metrics::with_local_recorder(&gauges, || baselines.export(&regressions));
    let id = slow.queryid;
    {
        let seen = gauges.0.lock().unwrap();
        assert_eq!(
            seen.get("neo_db_regressed_queries{}"),
            Some(&1.0),
            "{seen:?}"
        );
        let ratio = seen[&format!("neo_db_query_regression_ratio{{queryid={id}}}")];
        assert!((ratio - slow.ratio).abs() < 1e-9);
        assert!(seen[&format!("neo_db_query_regression_mean_seconds{{queryid={id}}}")] >= 0.001);
    }
    // Once fixed (a new baseline shows nothing), its series go back to 0.
    metrics::with_local_recorder(&gauges, || baselines.export(&[]));
    let seen = gauges.0.lock().unwrap();
    assert_eq!(seen.get("neo_db_regressed_queries{}"), Some(&0.0));
    assert_eq!(
        seen[&format!("neo_db_query_regression_ratio{{queryid={id}}}")],
        0.0
    );
}

async fn capture_says_what_is_missing_without_the_extension(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let baselines = QueryBaselines::install(&db, BaselineConfig::default())
        .await
        .unwrap();
    let error = baselines.capture("v1").await.unwrap_err();
    assert!(
        matches!(&error, Error::Config(message) if message.contains("CREATE EXTENSION pg_stat_statements")),
        "{error:?}"
    );
}

neo_testkit::over_routes!(
    a_query_slowed_by_a_dropped_index_is_listed_and_exported,
    capture_says_what_is_missing_without_the_extension,
);
