//! User-defined types (enums, domains, ranges, standalone composites and their arrays) behind
//! a transaction pooler.
//!
//! sqlx knows the built-in types by OID; a type it has not met on a connection it looks up
//! in `pg_type` the first time a statement's parameters or columns use it. For a column the
//! lookup happens between the statement's Parse/Describe and its Bind, and sqlx runs it as a
//! simple query (`sqlx-postgres` `connection/resolve.rs`, `TypeResolver::fill_cache`). A
//! simple query destroys the unnamed prepared statement (PostgreSQL's protocol: "a simple
//! Query message also destroys the unnamed statement"), so with unnamed statements
//! (`pooler = "transaction"`) the Bind fails with 26000 `unnamed prepared statement does not
//! exist`, once per connection and type; the type is cached afterwards. Named statements
//! (`pooler = "none"`) survive the lookup.
//!
//! Behind a transaction pooler neo-db therefore resolves the database's user-defined types
//! when it opens a connection ([`preload`]), with one simple query when there are none, and
//! drops pooled connections older than the last migration run through the `Db` that applied
//! something ([`TypesChanged`]), so that types a migration created are resolved too. A type
//! created otherwise while the pool is open (plain DDL, another process's migrations used by
//! this one) still fails the first statement per older connection: cast such columns to
//! `text` in the query (`mood::text`, `$1::text::mood`), or open a new `Db`.

use sqlx::{AssertSqlSafe, Executor as _, PgConnection, Row as _, SqlSafeStr as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most types resolved per connection: PostgreSQL allows 1,664 columns in a `SELECT`,
/// and a database with more user-defined types than this (many tenant schemas, each with its
/// own) should cast them to `text` instead (the module documentation).
const MOST_TYPES: i64 = 1_000;

/// The `regtype` names of the user-defined types of the database, and of their arrays.
const LIST_TYPES: &str = "SELECT t.oid::regtype::text FROM pg_catalog.pg_type t \
     JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid \
     LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
     LEFT JOIN pg_catalog.pg_class ec ON ec.oid = e.typrelid \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
       AND (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c') \
            OR e.typtype IN ('e', 'd', 'r', 'm') OR (e.typtype = 'c' AND ec.relkind = 'c')) \
     ORDER BY t.oid LIMIT ";

/// Teaches the connection's type cache every user-defined type of the database (see the
/// module documentation). One simple query when there are none; otherwise a transaction in
/// which sqlx prepares `SELECT NULL::t1, NULL::t2, …` (a named statement, which survives its
/// type lookups) and `DEALLOCATE ALL` drops it before the commit, so no statement is left on
/// the server connection a pooler hands on.
///
/// # Errors
/// The database error of a query: the pool then discards the connection.
pub(crate) async fn preload(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let names: Vec<String> = sqlx::raw_sql(AssertSqlSafe(format!("{LIST_TYPES}{MOST_TYPES}")))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Ok(());
    }
    if names.len() as i64 == MOST_TYPES {
        tracing::warn!(
            types = MOST_TYPES,
            "the database has more user-defined types than are resolved per connection; \
             cast the others to text behind a transaction pooler"
        );
    }
    // The names come from the server's own `regtype` output: quoted and qualified as needed.
    let columns: Vec<String> = names.iter().map(|name| format!("NULL::{name}")).collect();
    let sql = format!("SELECT {}", columns.join(", "));
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    tx.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
    sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    tx.commit().await
}

/// When a migration run through this `Db` last applied something: connections opened
/// before that are dropped when next acquired (their type caches may miss its types).
#[derive(Debug)]
pub(crate) struct TypesChanged {
    epoch: Instant,
    /// Nanoseconds after `epoch`; 0: never.
    at: AtomicU64,
}

impl TypesChanged {
    pub(crate) fn new() -> Self {
        TypesChanged {
            epoch: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    /// Records that types may have changed now.
    pub(crate) fn mark(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.at.store(now, Ordering::Release);
    }

    /// Whether a connection of `age` was opened before the last change.
    pub(crate) fn is_stale(&self, age: Duration) -> bool {
        match self.at.load(Ordering::Acquire) {
            0 => false,
            at => {
                age > self
                    .epoch
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(at))
            }
        }
    }
}
