//! neo-queue against a real PostgreSQL started by neo-testkit (or `NEO_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod fair;
mod queue;
mod trace;
mod worker;

use neo_db::{Db, DbConfig};
use neo_queue::{Queue, QueueConfig};
use neo_testkit::{PgRoute, TestDatabase};
use std::time::Duration;

/// A fresh database reached by `route` (`pooler = "transaction"` through PgBouncer, with
/// the direct URL for LISTEN), a `Db` and a migrated queue on it.
pub(crate) async fn setup(
    route: PgRoute,
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
) -> (TestDatabase, Db, Queue) {
    let test_db = route.database().await;
    let db = Db::connect(
        &(if route.is_pooled() {
            DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
        } else {
            DbConfig::with_url(test_db.url())
        }),
    )
    .await
    .unwrap();
    let queue = Queue::new(
        &db,
        configure(QueueConfig {
            retry_initial: Duration::from_millis(200),
            ..QueueConfig::default()
        }),
    )
    .unwrap();
    assert_eq!(queue.migrate().await.unwrap().applied, vec![1, 2, 3, 5]);
    (test_db, db, queue)
}
