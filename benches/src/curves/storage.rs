//! The PostgreSQL curves: queue claim+ack with N jobs pending, outbox dispatch with a backlog
//! of N events, orgs search and `get_many(1000)` over N organizations. Each table is filled
//! with COPY (neo-db's [`CopyWriter`]) with its secondary indexes dropped and then re-created
//! from their own definitions, as a restore does, and vacuumed and analysed, as autovacuum
//! would leave a table of that size.

use super::{Curve, Options, Point, Target};
use crate::check;
use crate::orgs::{median, time};
use neo_db::{CopyRow, CopyWriter, Db, RowWriter};
use neo_events::{DomainEvent, Outbox, OutboxConfig};
use neo_orgs::OrganizationService;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Timed rounds per queue or outbox point (each a fifth of the claimed jobs or events); the
/// median is reported, so one round slowed by a neighbour on a shared machine does not move it.
const ROUNDS: usize = 5;

fn median_of(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Events per outbox dispatch round, the same at every size (unless a tiny run claims fewer):
/// a round's commit is a fixed cost, so a size dispatched in smaller rounds would look dearer
/// per event (the first `--quick` run claimed 500 events at 1k rows in rounds of 100 against
/// 2,000 in rounds of 400 above it: 50 against 19 µs/event).
const OUTBOX_BATCH: usize = 100;

/// Rows per COPY flush when seeding.
const SEED_CHUNK: usize = 50_000;

/// Runs `sql` on `db`.
async fn execute(db: &Db, sql: String) {
    check(
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await,
    );
}

/// Fills `schema.table` with `n` rows made by `row`: drops the table's indexes that back no
/// constraint, copies the rows in chunks, re-creates the indexes from their definitions and
/// runs `VACUUM ANALYZE`.
async fn bulk_load<R: CopyRow>(
    db: &Db,
    schema: &str,
    table: &str,
    n: usize,
    row: impl Fn(usize) -> R,
) {
    let indexes: Vec<(String, String)> = check(
        sqlx::query_as(
            "SELECT i.indexname::text, i.indexdef FROM pg_indexes i \
             WHERE i.schemaname = $1 AND i.tablename = $2 AND NOT EXISTS \
             (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname \
              AND c.connamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1))",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(db.pool())
        .await,
    );
    for (name, _) in &indexes {
        execute(db, format!("DROP INDEX \"{schema}\".\"{name}\"")).await;
    }
    let mut writer = check(CopyWriter::<R>::new(db, &format!("{schema}.{table}")));
    for first in (0..n).step_by(SEED_CHUNK) {
        let rows: Vec<R> = (first..(first + SEED_CHUNK).min(n)).map(&row).collect();
        check(writer.write_all(&rows).await);
        check(writer.flush().await);
    }
    let report = check(writer.finish().await);
    assert_eq!(report.rows as usize, n, "every seeded row copied");
    for (_, definition) in indexes {
        // A partitioned table's index is defined `ON ONLY` the parent (the outbox, neo-events
        // migration 20): re-created so it would cover no partition. Re-create it on them all.
        execute(db, definition.replacen(" ON ONLY ", " ON ", 1)).await;
    }
    execute(db, format!("VACUUM ANALYZE \"{schema}\".\"{table}\"")).await;
}

/// A pending no-op job.
struct PendingJob(Uuid);

impl CopyRow for PendingJob {
    const COLUMNS: &'static [&'static str] = &["id", "kind", "payload", "max_attempts"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.field(&self.0)
            .field("noop")
            .field(&serde_json::json!({ "n": 1 }))
            .field(&25_i32);
    }
}

/// `queue/claim_ack_per_job`: with N jobs pending, claims `claimed` of them in batches of
/// 100 and acknowledges each batch (`ack_many`); microseconds per job.
pub fn queue_curve(url: &str, options: &Options) -> Curve {
    let rt = crate::runtime();
    let mut points = Vec::new();
    for &size in &options.sizes {
        let schema = format!("curves_queue_{size}");
        rt.block_on(async {
            let db = crate::db::connect(url, 1).await;
            crate::db::drop_schemas(&db, &[&schema]).await;
            db.close().await;
        });
        let (db2, queue) = crate::queue::queue_on(&rt, url, &schema);
        let claimed = options.claimed.min(size as usize / 2).max(ROUNDS);
        let per_job = rt.block_on(async {
            bulk_load(&db2, &schema, "jobs", size as usize, |_| {
                PendingJob(Uuid::now_v7())
            })
            .await;
            // One round to prepare the statements, not measured.
            let warm = check(queue.claim("curves", 1, None).await);
            check(
                queue
                    .ack_many(&warm.iter().map(|j| j.receipt()).collect::<Vec<_>>())
                    .await,
            );
            let mut rounds = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let round = (claimed / ROUNDS).max(1);
                let started = Instant::now();
                let mut done = 0;
                while done < round {
                    let jobs = check(queue.claim("curves", 100.min(round - done), None).await);
                    assert!(!jobs.is_empty(), "pending jobs to claim");
                    let receipts: Vec<_> = jobs.iter().map(|j| j.receipt()).collect();
                    let refused = check(queue.ack_many(&receipts).await);
                    assert!(refused.is_empty(), "acks refused: {refused:?}");
                    done += jobs.len();
                }
                rounds.push(started.elapsed().as_secs_f64() * 1e6 / done as f64);
            }
            median_of(rounds)
        });
        rt.block_on(async {
            crate::db::drop_schemas(&db2, &[&schema]).await;
            db2.close().await;
        });
        points.push(Point {
            size,
            value: per_job,
        });
    }
    Curve {
        name: "queue/claim_ack_per_job",
        size_of: "pending jobs",
        unit: "µs/job",
        target: Target::RatioAtMost(1.3),
        points,
    }
}

/// A committed, unprocessed event.
struct BackloggedEvent(usize);

impl CopyRow for BackloggedEvent {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "payload",
        "occurred_at",
        "schema_version",
    ];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.field(&Uuid::now_v7())
            .field("organization.updated")
            .field("organization")
            .field(&format!("org_{}", self.0))
            .field(&serde_json::json!({ "n": self.0, "plan": "growth" }))
            .field(&chrono::Utc::now())
            .field(&1_i32);
    }
}

/// `outbox/dispatch_per_event`: with a backlog of N events, dispatches `claimed` of them
/// (rounds of 100, oldest first) to a handler that does nothing; microseconds per event.
pub fn outbox_curve(url: &str, options: &Options) -> Curve {
    let rt = crate::runtime();
    let mut points = Vec::new();
    for &size in &options.sizes {
        let schema = format!("curves_outbox_{size}");
        let claimed = options.claimed.min(size as usize / 2).max(ROUNDS);
        let per_event = rt.block_on(async {
            let db = crate::db::connect(url, 4).await;
            crate::db::drop_schemas(&db, &[&schema]).await;
            let outbox = check(Outbox::new(
                &db,
                OutboxConfig {
                    schema: schema.clone(),
                    channel: schema.clone(),
                    batch_size: OUTBOX_BATCH.min((claimed / ROUNDS).max(1)),
                    ..OutboxConfig::default()
                },
            ));
            check(outbox.migrate().await);
            bulk_load(&db, &schema, "outbox", size as usize, BackloggedEvent).await;
            let noop = |events: Vec<DomainEvent>| async move {
                assert!(!events.is_empty());
                Ok::<_, std::convert::Infallible>(())
            };
            // One round to prepare the statements, not measured.
            check(outbox.dispatch_once(noop).await);
            let mut rounds = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let round = (claimed / ROUNDS).max(1);
                let started = Instant::now();
                let mut done = 0;
                while done < round {
                    let n = check(outbox.dispatch_once(noop).await);
                    assert!(n > 0, "a backlog to dispatch");
                    done += n;
                }
                rounds.push(started.elapsed().as_secs_f64() * 1e6 / done as f64);
            }
            let per_event = median_of(rounds);
            crate::db::drop_schemas(&db, &[&schema]).await;
            db.close().await;
            per_event
        });
        points.push(Point {
            size,
            value: per_event,
        });
    }
    Curve {
        name: "outbox/dispatch_per_event",
        size_of: "events backlog",
        unit: "µs/event",
        target: Target::RatioAtMost(1.3),
        points,
    }
}

/// An organization as neo-orgs writes it (pending verification, no domains), its JSON
/// columns as the service serializes their defaults.
struct SeededOrg(Uuid, usize, &'static OrgJson);

/// The default `verification`, `legal` and `branding` documents.
struct OrgJson([serde_json::Value; 3]);

fn org_json() -> &'static OrgJson {
    static JSON: std::sync::OnceLock<OrgJson> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        OrgJson([
            check(serde_json::to_value(neo_orgs::Verification::default())),
            check(serde_json::to_value(neo_orgs::Legal::default())),
            check(serde_json::to_value(neo_orgs::Branding::default())),
        ])
    })
}

impl CopyRow for SeededOrg {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "name",
        "slug",
        "status",
        "verification",
        "legal",
        "branding",
        "created_at",
        "updated_at",
        "version",
    ];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        let now = chrono::Utc::now();
        row.field(&self.0)
            .field(&format!("Curve Widget Works {}", self.1))
            .field(&format!("curve-widget-works-{}", self.1))
            .field("pending_verification")
            .field(&self.2.0[0])
            .field(&self.2.0[1])
            .field(&self.2.0[2])
            .field(&now)
            .field(&now)
            .field(&1_i64);
    }
}

/// `orgs/search_p95` (milliseconds, target < 10 ms) and `orgs/get_many_1000` (milliseconds,
/// median of five sets of up to 1,000 ids, uncached) over N organizations.
pub fn orgs_curves(url: &str, options: &Options) -> Vec<Curve> {
    let rt = crate::runtime();
    let (mut search, mut many) = (Vec::new(), Vec::new());
    for &size in &options.sizes {
        let schema = format!("curves_orgs_{size}");
        let (p95, get_many) = rt.block_on(async {
            let db = crate::db::connect(url, 4).await;
            crate::db::drop_schemas(&db, &[&schema, &format!("{schema}_events")]).await;
            let (db, orgs) = crate::orgs::service(url, &schema, false).await;
            let ids: Vec<Uuid> = (0..size).map(|_| Uuid::now_v7()).collect();
            bulk_load(&db, &schema, "organizations", size as usize, |n| {
                SeededOrg(ids[n], n, org_json())
            })
            .await;
            let figures = orgs_figures(&orgs, &ids, options.searches).await;
            crate::db::drop_schemas(&db, &[&schema, &format!("{schema}_events")]).await;
            db.close().await;
            figures
        });
        search.push(Point {
            size,
            value: ms(p95),
        });
        many.push(Point {
            size,
            value: ms(get_many),
        });
    }
    vec![
        Curve {
            name: "orgs/search_p95",
            size_of: "organizations",
            unit: "ms",
            target: Target::Below(10.0),
            points: search,
        },
        Curve {
            name: "orgs/get_many_1000",
            size_of: "organizations",
            unit: "ms",
            target: Target::None,
            points: many,
        },
    ]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Search p95 over `searches` searches (after one that prepares the statement), and the
/// median `get_many` of five sets of up to 1,000 ids spread over the table.
async fn orgs_figures(
    orgs: &OrganizationService,
    ids: &[Uuid],
    searches: usize,
) -> (Duration, Duration) {
    let size = ids.len();
    check(orgs.search(Some("works 1"), 20, None, false).await);
    let mut took = Vec::with_capacity(searches);
    for n in 0..searches {
        let text = format!("works {}", (n * 7_919) % size.max(1));
        took.push(
            time(async {
                let page = check(orgs.search(Some(&text), 20, None, false).await);
                assert!(!page.items.is_empty(), "{text} finds organizations");
            })
            .await,
        );
    }
    took.sort();
    let p95 = took[(took.len() * 95 / 100).min(took.len() - 1)];
    let per_set = size.min(1_000);
    let stride = (size / per_set).max(1);
    let mut sets = Vec::new();
    for set in 0..6 {
        let chosen: Vec<neo_core::OrganizationId> = (0..per_set)
            .map(|i| (i * stride + set * 7) % size)
            .map(|i| check(neo_core::OrganizationId::from_uuid(ids[i])))
            .collect();
        let elapsed = time(async {
            let got = check(orgs.get_many(&chosen).await);
            assert!(got.iter().all(Option::is_some), "every id found");
        })
        .await;
        // The first set prepares the statement.
        if set > 0 {
            sets.push(elapsed);
        }
    }
    (p95, median(sets))
}
