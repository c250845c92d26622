//! neo-db against raw sqlx doing the same work on the same server, in the same run.
//!
//! The server is a durable throwaway PostgreSQL from neo-testkit (fsync on, the defaults but
//! for `max_wal_size`: see [`BENCH_MAX_WAL_SIZE_MB`]), or
//! the one at `NEO_BENCH_DATABASE_URL`. Each pair has its own two tables of the same shape
//! (`uuid, text, int8, jsonb, version`), one per side, so neither side's table is grown or
//! bloated by another pair's writes.

use crate::{Pair, check};
use neo_db::{
    BatchRepository, Column, ColumnBinder, CopyConfig, CopyFormat, CopyRow, CopyWriter, Db,
    DbConfig, OnConflict, Record, RowWriter,
};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::hint::black_box;
use std::rc::Rc;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Environment variable naming an existing server to bench against.
pub const DATABASE_URL_VAR: &str = "NEO_BENCH_DATABASE_URL";

const COPY_TABLES: &str = "
DROP TABLE IF EXISTS ours_copy, raw_copy;
CREATE TABLE ours_copy (id uuid PRIMARY KEY, name text NOT NULL, qty int8 NOT NULL, data jsonb NOT NULL);
CREATE TABLE raw_copy (LIKE ours_copy INCLUDING ALL);
";

/// The pairs that write `Item` tables, by table suffix.
const ITEM_PAIRS: [&str; 4] = ["save", "single", "load", "update"];

/// The row both sides write.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    id: Uuid,
    name: String,
    qty: i64,
    data: serde_json::Value,
    version: i64,
}

impl Item {
    fn new(n: usize) -> Self {
        Item {
            id: Uuid::now_v7(),
            name: format!("item number {n}"),
            qty: n as i64,
            data: serde_json::json!({ "n": n, "tags": ["a", "b"] }),
            version: 1,
        }
    }
}

impl Record for Item {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("id"),
        Column::new("name"),
        Column::new("qty"),
        Column::new("data"),
        Column::new("version"),
    ];
    const VERSION_COLUMN: Option<&'static str> = Some("version");
    fn id(&self) -> &Uuid {
        &self.id
    }
    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |r| r.id)?;
        b.column("name", |r| r.name.as_str())?;
        b.column("qty", |r| r.qty)?;
        b.column("data", |r| &r.data)?;
        b.column("version", |r| r.version)
    }
}

impl CopyRow for Item {
    const COLUMNS: &'static [&'static str] = &["id", "name", "qty", "data"];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.field(&self.id)
            .field(&self.name)
            .field(&self.qty)
            .field(&self.data);
    }
}

pub(crate) fn items(n: usize) -> Vec<Item> {
    (0..n).map(Item::new).collect()
}

/// What a hand-written UNNEST insert binds: one array per column.
pub(crate) fn raw_unnest_insert(
    table: &str,
    rows: &[Item],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, name, qty, data, version) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::int8[])"
    )))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.qty).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
}

struct Fixture {
    rt: Rc<Runtime>,
    db: Db,
    copy_rows: Rc<Vec<Item>>,
}

impl Fixture {
    /// The repository on `ours_<suffix>`.
    fn repo(&self, suffix: &str) -> BatchRepository<Item> {
        check(BatchRepository::<Item>::new(
            &self.db,
            &format!("ours_{suffix}"),
        ))
    }
}

fn block_on<F: Future>(rt: &Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

/// The pairs of this module on the server at `url` (tables are dropped and re-created).
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let db = check(block_on(&rt, Db::connect(&DbConfig::with_url(url))));
    let mut ddl = COPY_TABLES.to_owned();
    for suffix in ITEM_PAIRS {
        let _ = write!(
            ddl,
            "DROP TABLE IF EXISTS ours_{suffix}, raw_{suffix};
             CREATE TABLE ours_{suffix} (id uuid PRIMARY KEY, name text NOT NULL, qty int8 NOT NULL,
                                         data jsonb NOT NULL, version int8 NOT NULL DEFAULT 1);
             CREATE TABLE raw_{suffix} (LIKE ours_{suffix} INCLUDING ALL);"
        );
    }
    check(block_on(
        &rt,
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(db.pool()),
    ));
    let fixture = Fixture {
        rt,
        db,
        copy_rows: Rc::new(items(100_000)),
    };
    let mut pairs = vec![save_batch(&fixture, 1.2), save_vs_single_inserts(&fixture)];
    pairs.push(load_batch(&fixture));
    pairs.push(update_batch(&fixture));
    pairs.push(copy(&fixture, CopyFormat::Binary));
    pairs.push(copy(&fixture, CopyFormat::Text));
    pairs
}

/// The pairs of this module, on `NEO_BENCH_DATABASE_URL` or a durable throwaway server.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&bench_database_url())
}

/// A pool of up to `max_connections` on the server at `url`.
pub async fn connect(url: &str, max_connections: u32) -> neo_db::Db {
    crate::check(
        neo_db::Db::connect(&neo_db::DbConfig {
            max_connections,
            ..neo_db::DbConfig::with_url(url)
        })
        .await,
    )
}

/// Drops `schemas` and everything in them, so a bench that migrates them starts from empty
/// tables even on a server that earlier runs used (`NEO_BENCH_DATABASE_URL`).
pub async fn drop_schemas(db: &neo_db::Db, schemas: &[&str]) {
    for schema in schemas {
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            crate::check(neo_db::quote_identifier(schema))
        );
        crate::check(
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(db.pool())
                .await,
        );
    }
}

/// Waits until the server at `url` has no background work left from earlier benches: a
/// `CHECKPOINT` writes their dirty pages now, and the wait lasts until no autovacuum worker runs
/// (at most `within`). Latency probes call it first, so that an idle-path figure is not taken
/// while the server flushes or vacuums what a bulk bench just wrote.
pub async fn settle(url: &str, within: std::time::Duration) {
    let db = connect(url, 1).await;
    crate::check(sqlx::raw_sql("CHECKPOINT").execute(db.pool()).await);
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        let vacuuming: i64 = crate::check(
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
            )
            .fetch_one(db.pool())
            .await,
        );
        if vacuuming == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    db.pool().close().await;
}

/// `max_wal_size` of the throwaway bench server, in megabytes. At the default 1 GB, the seeding
/// of 100,000 organizations and the webhook run forced a checkpoint every 15 to 21 s
/// (PostgreSQL logged "checkpoints are occurring too frequently"), so the write figures after
/// them were taken while every page's first change was logged whole. A production server is
/// sized so checkpoints come from `checkpoint_timeout` instead; so is this one.
pub const BENCH_MAX_WAL_SIZE_MB: u32 = 4096;

/// `NEO_BENCH_DATABASE_URL`, or a durable throwaway server started once per process.
pub fn bench_database_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
            return url;
        }
        let server = check(neo_testkit::PgServer::start_with(
            neo_testkit::PgServerOptions {
                durable: true,
                max_wal_size_mb: Some(BENCH_MAX_WAL_SIZE_MB),
                ..neo_testkit::PgServerOptions::default()
            },
        ));
        let url = server.url();
        // The server lives as long as the process; its watchdog removes it afterwards.
        std::mem::forget(server);
        url
    })
    .clone()
}

fn save_batch(f: &Fixture, target: f64) -> Pair {
    let (rt, db, repo) = (Rc::clone(&f.rt), f.db.clone(), f.repo("save"));
    let (rt2, db2) = (Rc::clone(&f.rt), f.db.clone());
    Pair {
        name: "db/save_batch_100",
        target: Some(target),
        per_iteration: Some(100),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let rows = items(100);
            black_box(check(block_on(
                &rt,
                repo.save_batch(&db, &rows, OnConflict::Error),
            )));
        }),
        raw: Box::new(move || {
            let rows = items(100);
            let done = check(block_on(
                &rt2,
                raw_unnest_insert("raw_save", &rows).execute(db2.pool()),
            ));
            black_box(done.rows_affected());
        }),
    }
}

fn save_vs_single_inserts(f: &Fixture) -> Pair {
    let (rt, db, repo) = (Rc::clone(&f.rt), f.db.clone(), f.repo("single"));
    let (rt2, db2) = (Rc::clone(&f.rt), f.db.clone());
    Pair {
        name: "db/save_batch_100_vs_100_inserts",
        // At least 15 times faster than one autocommit INSERT per row.
        target: Some(1.0 / 15.0),
        per_iteration: Some(100),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let rows = items(100);
            black_box(check(block_on(
                &rt,
                repo.save_batch(&db, &rows, OnConflict::Error),
            )));
        }),
        raw: Box::new(move || {
            let rows = items(100);
            block_on(&rt2, async {
                for r in &rows {
                    check(
                        sqlx::query(
                            "INSERT INTO raw_single (id, name, qty, data, version) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(r.id)
                        .bind(r.name.as_str())
                        .bind(r.qty)
                        .bind(&r.data)
                        .bind(r.version)
                        .execute(db2.pool())
                        .await,
                    );
                }
            });
        }),
    }
}

fn load_batch(f: &Fixture) -> Pair {
    let rows = items(1000);
    let repo = f.repo("load");
    check(block_on(
        &f.rt,
        repo.save_batch(&f.db, &rows, OnConflict::Error),
    ));
    check(block_on(
        &f.rt,
        raw_unnest_insert("raw_load", &rows).execute(f.db.pool()),
    ));
    let ids: Rc<Vec<Uuid>> = Rc::new(rows.iter().map(|r| r.id).collect());
    let (rt, db, ours_ids) = (Rc::clone(&f.rt), f.db.clone(), Rc::clone(&ids));
    let (rt2, db2) = (Rc::clone(&f.rt), f.db.clone());
    Pair {
        name: "db/load_batch_1000",
        target: Some(1.2),
        per_iteration: Some(1000),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let loaded = check(block_on(&rt, repo.load_batch(&db, &ours_ids)));
            assert_eq!(loaded.len(), 1000);
            black_box(loaded);
        }),
        raw: Box::new(move || {
            let loaded: Vec<Item> = check(block_on(
                &rt2,
                sqlx::query_as("SELECT * FROM raw_load WHERE id = ANY($1)")
                    .bind(&ids[..])
                    .fetch_all(db2.pool()),
            ));
            assert_eq!(loaded.len(), 1000);
            black_box(loaded);
        }),
    }
}

fn update_batch(f: &Fixture) -> Pair {
    let ours_rows = items(1000);
    let raw_rows = items(1000);
    let repo = f.repo("update");
    check(block_on(
        &f.rt,
        repo.save_batch(&f.db, &ours_rows, OnConflict::Error),
    ));
    check(block_on(
        &f.rt,
        raw_unnest_insert("raw_update", &raw_rows).execute(f.db.pool()),
    ));
    let ours_rows = RefCell::new(ours_rows);
    let raw_rows = RefCell::new(raw_rows);
    let (rt, db) = (Rc::clone(&f.rt), f.db.clone());
    let (rt2, db2) = (Rc::clone(&f.rt), f.db.clone());
    Pair {
        name: "db/update_batch_1000",
        target: Some(1.3),
        per_iteration: Some(1000),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let mut rows = ours_rows.borrow_mut();
            rows.iter_mut().for_each(|r| r.qty += 1);
            *rows = check(block_on(&rt, repo.update_batch(&db, &rows)));
        }),
        raw: Box::new(move || {
            let mut rows = raw_rows.borrow_mut();
            rows.iter_mut().for_each(|r| r.qty += 1);
            let updated: Vec<Item> = check(block_on(
                &rt2,
                sqlx::query_as(
                    "UPDATE raw_update AS t SET name = u.name, qty = u.qty, data = u.data, version = t.version + 1 \
                     FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::int8[]) AS u(id, name, qty, data, version) \
                     WHERE t.id = u.id AND t.version = u.version RETURNING t.*",
                )
                .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.qty).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
                .fetch_all(db2.pool()),
            ));
            assert_eq!(updated.len(), 1000, "raw update lost rows");
            *rows = updated;
        }),
    }
}

/// Hand-written COPY: text format built with `write!`, sent with sqlx's `copy_in_raw`.
fn raw_copy_text(rows: &[Item]) -> String {
    let mut text = String::with_capacity(rows.len() * 96);
    for r in rows {
        let _ = writeln!(text, "{}\t{}\t{}\t{}", r.id, r.name, r.qty, r.data);
    }
    text
}

fn copy(f: &Fixture, format: CopyFormat) -> Pair {
    let (rt, db, rows) = (Rc::clone(&f.rt), f.db.clone(), Rc::clone(&f.copy_rows));
    let (rt2, db2, raw_rows) = (Rc::clone(&f.rt), f.db.clone(), Rc::clone(&f.copy_rows));
    let config = CopyConfig {
        format,
        flush_rows: 1_000_000,
        flush_bytes: 1 << 30,
        ..CopyConfig::default()
    };
    Pair {
        name: match format {
            CopyFormat::Binary => "db/copy_100k_binary",
            CopyFormat::Text => "db/copy_100k_text",
        },
        // At least 0.9 times raw COPY's throughput.
        target: Some(1.0 / 0.9),
        per_iteration: Some(100_000),
        raw_per_iteration: None,
        ours: Box::new(move || {
            block_on(&rt, async {
                check(sqlx::query("TRUNCATE ours_copy").execute(db.pool()).await);
                let mut writer =
                    check(check(CopyWriter::<Item>::new(&db, "ours_copy")).with_config(config));
                check(writer.write_all(rows.iter()).await);
                let report = check(writer.finish().await);
                assert_eq!(report.rows, 100_000);
            });
        }),
        raw: Box::new(move || {
            block_on(&rt2, async {
                check(sqlx::query("TRUNCATE raw_copy").execute(db2.pool()).await);
                let text = raw_copy_text(&raw_rows);
                let mut conn = check(db2.pool().acquire().await);
                let mut copy = check(
                    conn.copy_in_raw(
                        "COPY raw_copy (id, name, qty, data) FROM STDIN WITH (FORMAT text)",
                    )
                    .await,
                );
                check(copy.send(text.as_bytes()).await);
                assert_eq!(check(copy.finish().await), 100_000);
            });
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair runs, and ours and raw leave the same number of rows behind.
    #[test]
    fn pairs_run_and_both_sides_write_the_same_rows() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let test_db = rt.block_on(neo_testkit::postgres());
        let mut pairs = pairs_on(test_db.url());
        let db = check(rt.block_on(Db::connect(&DbConfig::with_url(test_db.url()))));
        let count = |table: &str| -> i64 {
            check(
                rt.block_on(
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM {table}"
                    )))
                    .fetch_one(db.pool()),
                ),
            )
        };
        for pair in &mut pairs {
            (pair.ours)();
            (pair.raw)();
        }
        for suffix in ITEM_PAIRS {
            assert_eq!(
                count(&format!("ours_{suffix}")),
                count(&format!("raw_{suffix}")),
                "{suffix}"
            );
        }
        assert_eq!(count("ours_copy"), count("raw_copy"));
        assert_eq!(count("ours_copy"), 100_000);
    }
}
