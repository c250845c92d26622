//! Through PgBouncer in transaction mode (neo-db `pooler = "transaction"`), next to raw sqlx
//! through the same PgBouncer and to the direct connection; and what giving up named
//! prepared statements costs on a direct connection.

use crate::db::{Item, bench_database_url, items, raw_unnest_insert};
use crate::{Pair, check};
use neo_db::{BatchRepository, Db, DbConfig, OnConflict, Pooler};
use std::hint::black_box;
use std::rc::Rc;
use uuid::Uuid;

/// The URL of a PgBouncer in transaction mode in front of the bench server (started once per
/// process, with as many server connections as the bench pools use).
pub fn bench_pgbouncer_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let backend = bench_database_url();
        let bouncer = check(neo_testkit::PgBouncer::start_with(
            &backend,
            neo_testkit::PgBouncerOptions {
                pool_size: 32,
                ..neo_testkit::PgBouncerOptions::default()
            },
        ));
        // postgres://user@host:port/database?options: the database PgBouncer passes on.
        let database = backend
            .split('?')
            .next()
            .and_then(|u| u.rsplit_once('/'))
            .map(|(_, d)| d.to_owned())
            .filter(|d| !d.is_empty() && !d.contains('@'))
            .unwrap_or_else(|| "postgres".to_owned());
        let url = bouncer.url_for(&database);
        // PgBouncer lives as long as the process; its watchdog stops it afterwards.
        std::mem::forget(bouncer);
        url
    })
    .clone()
}

/// A pool on `url` for `pooler`, LISTEN on `direct` behind a pooler.
pub fn pool_for(url: &str, direct: &str, pooler: Pooler, max_connections: u32) -> DbConfig {
    DbConfig {
        max_connections,
        pooler,
        listen_url: (pooler != Pooler::None).then(|| direct.to_owned().into()),
        ..DbConfig::with_url(url)
    }
}

fn table(rt: &tokio::runtime::Runtime, db: &Db, name: &str) {
    let ddl = format!(
        "DROP TABLE IF EXISTS {name};
         CREATE TABLE {name} (id uuid PRIMARY KEY, name text NOT NULL, qty int8 NOT NULL,
                              data jsonb NOT NULL, version int8 NOT NULL DEFAULT 1);"
    );
    check(rt.block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(db.pool())));
}

/// The db pairs of this module on the server at `direct` and the PgBouncer at `bouncer`.
pub fn db_pairs_on(direct: &str, bouncer: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    let pooled = check(rt.block_on(Db::connect(&pool_for(
        bouncer,
        direct,
        Pooler::Transaction,
        4,
    ))));
    let unnamed = check(rt.block_on(Db::connect(&pool_for(
        direct,
        direct,
        Pooler::Transaction,
        4,
    ))));
    let named = check(rt.block_on(Db::connect(&pool_for(direct, direct, Pooler::None, 4))));
    for name in [
        "ours_pgb_save",
        "raw_pgb_save",
        "raw_pgb_autocommit",
        "ours_unnamed_save",
        "raw_named_save",
        "pooler_load",
    ] {
        table(&rt, &named, name);
    }
    let repo = |db: &Db, table: &str| check(BatchRepository::<Item>::new(db, table));

    // Ours through PgBouncer against a hand-written UNNEST insert through the same
    // PgBouncer, written the way raw sqlx stays correct there: an unnamed statement (a named
    // one fails) inside BEGIN … COMMIT (outside a transaction PgBouncer may bind it on
    // another server connection; neo-db's tests show it).
    let save_pgb = {
        let (rt, rt2) = (Rc::clone(&rt), Rc::clone(&rt));
        let (db, db2, repo) = (
            pooled.clone(),
            pooled.clone(),
            repo(&pooled, "ours_pgb_save"),
        );
        Pair {
            name: "db/save_batch_100_pgbouncer",
            target: Some(1.2),
            per_iteration: Some(100),
            raw_per_iteration: None,
            ours: Box::new(move || {
                let rows = items(100);
                black_box(check(rt.block_on(repo.save_batch(
                    &db,
                    &rows,
                    OnConflict::Error,
                ))));
            }),
            raw: Box::new(move || {
                let rows = items(100);
                let done = check(rt2.block_on(async {
                    let mut tx = db2.pool().begin().await?;
                    let done = raw_unnest_insert("raw_pgb_save", &rows)
                        .persistent(false)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(done)
                }));
                black_box(done.rows_affected());
            }),
        }
    };

    // The same against the raw insert in autocommit, which is right only while one client
    // at a time uses the pooler: what the transaction around each statement costs.
    let save_pgb_autocommit = {
        let (rt, rt2) = (Rc::clone(&rt), Rc::clone(&rt));
        let (db, db2, repo) = (
            pooled.clone(),
            pooled.clone(),
            repo(&pooled, "ours_pgb_save"),
        );
        Pair {
            name: "db/save_batch_100_pgbouncer_vs_single_client_autocommit",
            target: None,
            per_iteration: Some(100),
            raw_per_iteration: None,
            ours: Box::new(move || {
                let rows = items(100);
                black_box(check(rt.block_on(repo.save_batch(
                    &db,
                    &rows,
                    OnConflict::Error,
                ))));
            }),
            raw: Box::new(move || {
                let rows = items(100);
                let done = check(
                    rt2.block_on(
                        raw_unnest_insert("raw_pgb_autocommit", &rows)
                            .persistent(false)
                            .execute(db2.pool()),
                    ),
                );
                black_box(done.rows_affected());
            }),
        }
    };

    // The cost of giving up named prepared statements, on a direct connection: the same
    // repository call with pooler = "transaction" (unnamed, in a transaction) against
    // pooler = "none" (prepared once per connection, autocommit).
    let save_unnamed = {
        let (rt, rt2) = (Rc::clone(&rt), Rc::clone(&rt));
        let (db, ours) = (unnamed.clone(), repo(&unnamed, "ours_unnamed_save"));
        let (db2, theirs) = (named.clone(), repo(&named, "raw_named_save"));
        Pair {
            name: "db/save_batch_100_pooler_transaction_vs_none",
            target: None,
            per_iteration: Some(100),
            raw_per_iteration: None,
            ours: Box::new(move || {
                let rows = items(100);
                black_box(check(rt.block_on(ours.save_batch(
                    &db,
                    &rows,
                    OnConflict::Error,
                ))));
            }),
            raw: Box::new(move || {
                let rows = items(100);
                black_box(check(rt2.block_on(theirs.save_batch(
                    &db2,
                    &rows,
                    OnConflict::Error,
                ))));
            }),
        }
    };

    let load_unnamed = {
        let rows = items(100);
        let seed = repo(&named, "pooler_load");
        check(rt.block_on(seed.save_batch(&named, &rows, OnConflict::Error)));
        let ids: Rc<Vec<Uuid>> = Rc::new(rows.iter().map(|r| *neo_db::Record::id(r)).collect());
        let (rt, rt2, ids2) = (Rc::clone(&rt), Rc::clone(&rt), Rc::clone(&ids));
        let (db, ours) = (unnamed.clone(), repo(&unnamed, "pooler_load"));
        let (db2, theirs) = (named.clone(), seed);
        Pair {
            name: "db/load_batch_100_pooler_transaction_vs_none",
            target: None,
            per_iteration: Some(100),
            raw_per_iteration: None,
            ours: Box::new(move || {
                let loaded = check(rt.block_on(ours.load_batch(&db, &ids)));
                assert_eq!(loaded.iter().flatten().count(), 100);
                black_box(loaded);
            }),
            raw: Box::new(move || {
                let loaded = check(rt2.block_on(theirs.load_batch(&db2, &ids2)));
                assert_eq!(loaded.iter().flatten().count(), 100);
                black_box(loaded);
            }),
        }
    };
    vec![save_pgb, save_pgb_autocommit, save_unnamed, load_unnamed]
}

/// The db pairs of this module, on the bench PostgreSQL and a PgBouncer in front of it.
pub fn db_pairs() -> Vec<Pair> {
    db_pairs_on(&bench_database_url(), &bench_pgbouncer_url())
}

/// Batched queue jobs end to end through PgBouncer (pooler = "transaction", LISTEN on the
/// direct URL) against the same run on a direct connection.
pub fn queue_pairs_on(direct: &str, bouncer: &str) -> Vec<Pair> {
    use crate::queue::{JOBS, queue_with, run_batched};
    let rt = Rc::new(crate::runtime());
    let (db, queue) = queue_with(
        &rt,
        &pool_for(bouncer, direct, Pooler::Transaction, 16),
        "bench_queue_pgbouncer",
    );
    let (direct_db, direct_queue) = queue_with(
        &rt,
        &pool_for(direct, direct, Pooler::None, 16),
        "bench_queue_direct",
    );
    let rt2 = Rc::clone(&rt);
    vec![Pair {
        name: "queue/end_to_end_batched_pgbouncer_vs_direct",
        // Time per job; ≥ 0.7× the direct rate is ≤ 1/0.7 its time.
        target: Some(1.0 / 0.7),
        per_iteration: Some(JOBS as u64),
        raw_per_iteration: None,
        ours: Box::new(move || rt.block_on(run_batched(&db, &queue, JOBS))),
        raw: Box::new(move || rt2.block_on(run_batched(&direct_db, &direct_queue, JOBS))),
    }]
}

/// The queue pairs of this module, on the bench PostgreSQL and a PgBouncer in front of it.
pub fn queue_pairs() -> Vec<Pair> {
    queue_pairs_on(&bench_database_url(), &bench_pgbouncer_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair runs through a real PgBouncer, and both sides write what they should.
    #[test]
    fn pooler_pairs_run_through_pgbouncer() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::PgRoute::PgBouncer.database());
        let mut pairs = db_pairs_on(test_db.direct_url(), test_db.url());
        pairs.extend(queue_pairs_on(test_db.direct_url(), test_db.url()));
        assert_eq!(pairs.len(), 5);
        crate::run_each_once(pairs);
        let named = rt
            .block_on(Db::connect(&DbConfig::with_url(test_db.direct_url())))
            .unwrap();
        for (table, rows) in [
            ("ours_pgb_save", 200),
            ("raw_pgb_save", 100),
            ("raw_pgb_autocommit", 100),
            ("ours_unnamed_save", 100),
            ("raw_named_save", 100),
        ] {
            let row = rt
                .block_on(
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                        .fetch_one(named.pool()),
                )
                .unwrap();
            assert_eq!(sqlx::Row::get::<i64, _>(&row, 0), rows, "{table}");
        }
    }
}
