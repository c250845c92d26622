//! neo-queue against a real PostgreSQL started by neo-testkit (or `NEO_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod fair;
mod queue;
mod worker;

use neo_db::{Db, DbConfig};
use neo_queue::{Queue, QueueConfig};
use neo_testkit::TestDatabase;
use std::time::Duration;

pub(crate) async fn setup(
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
) -> (TestDatabase, Db, Queue) {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
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
    assert_eq!(queue.migrate().await.unwrap().applied, vec![1, 2, 3]);
    (test_db, db, queue)
}
