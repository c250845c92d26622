//! `#[derive(Record)]` against the hand-written `Record` impl of the same struct: the derived
//! code must cost nothing (issue 32: derived == hand-written, at most 1.02 times).
//!
//! Both sides `save_batch` 100 rows of the same shape (`uuid, text, int8, jsonb, version`)
//! through neo-db's `BatchRepository` into their own table of the same definition; `raw` is
//! [`crate::db::Item`], whose `Record` impl is written by hand.

use crate::db::{Item, bench_database_url, items};
use crate::{Pair, check};
use neo_db::{BatchRepository, Db, DbConfig, OnConflict, Table};
use std::hint::black_box;
use std::rc::Rc;
use tokio::runtime::Runtime;
use uuid::Uuid;

const TABLES: &str = "
DROP TABLE IF EXISTS derived_save, hand_save;
CREATE TABLE derived_save (id uuid PRIMARY KEY, name text NOT NULL, qty int8 NOT NULL,
                           data jsonb NOT NULL, version int8 NOT NULL DEFAULT 1);
CREATE TABLE hand_save (LIKE derived_save INCLUDING ALL);
";

/// [`Item`] with its `Record` derived.
#[derive(Debug, Clone, neo_db::Record)]
#[record(table = "derived_save")]
pub struct DerivedItem {
    id: Uuid,
    name: String,
    qty: i64,
    data: serde_json::Value,
    #[record(version)]
    version: i64,
}

impl DerivedItem {
    /// The values `crate::db::items` gives row `n`.
    fn new(n: usize) -> Self {
        DerivedItem {
            id: Uuid::now_v7(),
            name: format!("item number {n}"),
            qty: n as i64,
            data: serde_json::json!({ "n": n, "tags": ["a", "b"] }),
            version: 1,
        }
    }
}

fn derived_items(n: usize) -> Vec<DerivedItem> {
    (0..n).map(DerivedItem::new).collect()
}

/// The pairs of this module on the server at `url` (its two tables are dropped and re-created).
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let db = check(rt.block_on(Db::connect(&DbConfig::with_url(url))));
    check(rt.block_on(sqlx::raw_sql(TABLES).execute(db.pool())));
    vec![save_batch(&rt, &db)]
}

/// The pairs of this module, on `NEO_BENCH_DATABASE_URL` or the durable throwaway server.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&bench_database_url())
}

fn save_batch(rt: &Rc<Runtime>, db: &Db) -> Pair {
    let derived = check(DerivedItem::batch_repository(db));
    let hand = check(BatchRepository::<Item>::new(db, "hand_save"));
    let (rt1, db1) = (Rc::clone(rt), db.clone());
    let (rt2, db2) = (Rc::clone(rt), db.clone());
    Pair {
        name: "db/save_batch_derived",
        // The derived impl binds the same arrays as the hand-written one: no cost of its own.
        target: Some(1.02),
        per_iteration: Some(100),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let rows = derived_items(100);
            black_box(check(rt1.block_on(derived.save_batch(
                &db1,
                &rows,
                OnConflict::Error,
            ))));
        }),
        raw: Box::new(move || {
            let rows = items(100);
            black_box(check(rt2.block_on(hand.save_batch(
                &db2,
                &rows,
                OnConflict::Error,
            ))));
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_db::Record;

    /// The derived declarations equal the hand-written ones, and both sides write their rows.
    #[test]
    fn both_sides_write_the_same_rows() {
        assert_eq!(DerivedItem::COLUMNS, <Item as Record>::COLUMNS);
        assert_eq!(
            DerivedItem::VERSION_COLUMN,
            <Item as Record>::VERSION_COLUMN
        );
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let test_db = rt.block_on(neo_testkit::postgres());
        let mut pairs = pairs_on(test_db.url());
        for pair in &mut pairs {
            (pair.ours)();
            (pair.raw)();
        }
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
        assert_eq!(count("derived_save"), 100);
        assert_eq!(count("hand_save"), 100);
    }
}
