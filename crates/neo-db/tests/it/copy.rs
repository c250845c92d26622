use crate::{count, setup, setup_with};
use chrono::{DateTime, TimeZone, Utc};
use neo_core::{ErrorKind, HasErrorKind, OrganizationId};
use neo_db::{CopyConfig, CopyFormat, CopyRow, CopyWriter, Error, RowWriter};
use neo_testkit::PgRoute;
use std::time::Duration;
use uuid::Uuid;

const EVENTS: &str = "CREATE TABLE events (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name <> 'bad'),
    amount int8 NOT NULL,
    data jsonb,
    at timestamptz NOT NULL,
    org uuid,
    flag bool NOT NULL,
    day date,
    blob bytea,
    ratio float8
)";

#[derive(Debug, Clone)]
struct Event {
    id: Uuid,
    name: String,
    amount: i64,
    data: Option<serde_json::Value>,
    at: DateTime<Utc>,
    org: Option<OrganizationId>,
    flag: bool,
    day: Option<chrono::NaiveDate>,
    blob: Option<Vec<u8>>,
    ratio: f64,
}

impl CopyRow for Event {
    const COLUMNS: &'static [&'static str] = &[
        "id", "name", "amount", "data", "at", "org", "flag", "day", "blob", "ratio",
    ];
    fn write_row(&self, row: &mut RowWriter<'_>) {
        row.field(&self.id)
            .field(&self.name)
            .field(&self.amount)
            .field(&self.data)
            .field(&self.at)
            .field(&self.org)
            .field(&self.flag)
            .field(&self.day)
            .field(&self.blob)
            .field(&self.ratio);
    }
}

fn event(n: u64) -> Event {
    Event {
        id: Uuid::now_v7(),
        // Characters the text format must escape.
        name: format!("event {n}\twith\\tab\nand newline"),
        amount: n as i64 - 5,
        data: (!n.is_multiple_of(3))
            .then(|| serde_json::json!({ "n": n, "s": "q\"uote\twith \\ and\nnewline" })),
        at: Utc
            .timestamp_opt(1_700_000_000 + n as i64, 123_000)
            .unwrap(),
        org: (n.is_multiple_of(2)).then(OrganizationId::new),
        flag: !n.is_multiple_of(2),
        day: chrono::NaiveDate::from_ymd_opt(2024, 2, 29),
        blob: Some(vec![0, 1, 0xfe, b'\\', b'\n']),
        ratio: n as f64 / 4.0,
    }
}

fn config(format: CopyFormat, flush_rows: usize) -> CopyConfig {
    CopyConfig {
        format,
        flush_rows,
        ..CopyConfig::default()
    }
}

/// A row as stored, read back by column name.
#[derive(Debug, sqlx::FromRow)]
struct Stored {
    id: Uuid,
    name: String,
    amount: i64,
    data: Option<serde_json::Value>,
    at: DateTime<Utc>,
    org: Option<Uuid>,
    flag: bool,
}

async fn stored(db: &neo_db::Db) -> Vec<Stored> {
    sqlx::query_as("SELECT id, name, amount, data, at, org, flag FROM events ORDER BY amount")
        .persistent(false)
        .fetch_all(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap()
}

async fn binary_and_text_copy_store_every_type_exactly(route: PgRoute) {
    for format in [CopyFormat::Binary, CopyFormat::Text] {
        let (_t, db) = setup(route, &[EVENTS]).await;
        let events: Vec<Event> = (0..250).map(event).collect();
        let mut writer = CopyWriter::<Event>::new(&db, "events")
            .unwrap()
            .with_config(config(format, 100))
            .unwrap();
        writer.write_all(&events).await.unwrap();
        // Two automatic flushes of 100 happened; 50 rows wait for finish.
        assert_eq!(writer.buffered_rows(), 50);
        assert_eq!(count(&db, "events").await, 200);
        let report = writer.finish().await.unwrap();
        assert_eq!((report.rows, report.flushes), (250, 3));

        let rows = stored(&db).await;
        assert_eq!(rows.len(), 250);
        for (row, e) in rows.iter().zip(&events) {
            assert_eq!(row.id, e.id);
            assert_eq!(row.name, e.name, "{format:?}");
            assert_eq!(row.amount, e.amount);
            assert_eq!(row.data, e.data);
            assert_eq!(row.at, e.at);
            assert_eq!(row.org, e.org.map(OrganizationId::into_uuid));
            assert_eq!(row.flag, e.flag);
        }
        let extra: (Option<chrono::NaiveDate>, Option<Vec<u8>>, Option<f64>) =
            sqlx::query_as("SELECT day, blob, ratio FROM events WHERE amount = -4")
                .persistent(false)
                .fetch_one(&mut *db.statement_connection().await.unwrap())
                .await
                .unwrap();
        assert_eq!(
            extra,
            (events[1].day, events[1].blob.clone(), Some(0.25)),
            "{format:?}"
        );
    }
}

async fn a_bad_row_fails_its_flush_only_names_the_row_and_leaves_the_pool_healthy(route: PgRoute) {
    for format in [CopyFormat::Binary, CopyFormat::Text] {
        let (_t, db) = setup_with(route, &[EVENTS], |c| neo_db::DbConfig {
            max_connections: 1,
            ..c
        })
        .await;
        let mut writer = CopyWriter::<Event>::new(&db, "events")
            .unwrap()
            .with_config(config(format, 10))
            .unwrap();
        let mut events: Vec<Event> = (0..30).map(event).collect();
        events[17].name = "bad".into(); // violates the CHECK, in the second flush
        let mut results = Vec::new();
        for e in &events {
            results.push(writer.write(e).await);
        }
        let failure = results.into_iter().find_map(Result::err).unwrap();
        let Error::CopyRow {
            row, kind, message, ..
        } = &failure
        else {
            panic!("expected CopyRow, got {failure:?}");
        };
        assert_eq!(*row, 17, "{failure}");
        assert_eq!(*kind, ErrorKind::Validation);
        assert!(message.contains("events_name_check"), "{message}");
        writer.finish().await.unwrap();
        // First and third flush committed, nothing of the second.
        assert_eq!(count(&db, "events").await, 20, "{format:?}");
        let in_bad_flush: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE amount BETWEEN 5 AND 14")
                .persistent(false)
                .fetch_one(&mut *db.statement_connection().await.unwrap())
                .await
                .unwrap();
        assert_eq!(in_bad_flush, 0);
        // The only connection of the pool still works.
        assert_eq!(db.health().await.unwrap().pool.max_size, 1);
    }
}

async fn a_duplicate_key_is_already_exists_and_upsert_goes_through_staging(route: PgRoute) {
    let (_t, db) = setup(route, &[EVENTS]).await;
    let mut events: Vec<Event> = (0..20).map(event).collect();
    let mut writer = CopyWriter::<Event>::new(&db, "events").unwrap();
    writer.write_all(&events).await.unwrap();
    writer.flush().await.unwrap();
    writer.write(&events[3]).await.unwrap();
    let err = writer.flush().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    drop(writer);

    for e in &mut events {
        e.amount += 1000;
    }
    events.push(event(99));
    // Settings changed after choosing upsert still copy into the staging table.
    let mut upsert = CopyWriter::<Event>::new(&db, "events")
        .unwrap()
        .upsert_on(&["id"])
        .unwrap()
        .with_config(config(CopyFormat::Text, 8))
        .unwrap();
    upsert.write_all(&events).await.unwrap();
    let report = upsert.finish().await.unwrap();
    assert_eq!((report.rows, report.flushes), (21, 3));
    assert_eq!(count(&db, "events").await, 21);
    let small: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE amount < 900")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(small, 1); // only event(99)
}

async fn rows_are_flushed_by_age_and_a_dropped_flush_does_not_poison_the_connection(
    route: PgRoute,
) {
    let (t, db) = setup_with(route, &[EVENTS], |c| neo_db::DbConfig {
        max_connections: 1,
        ..c
    })
    .await;
    let mut writer = CopyWriter::<Event>::new(&db, "events")
        .unwrap()
        .with_config(CopyConfig {
            flush_interval: Duration::from_millis(50),
            ..CopyConfig::default()
        })
        .unwrap();
    writer.write(&event(1)).await.unwrap();
    assert_eq!(writer.flush_if_due().await.unwrap(), 0);
    tokio::time::sleep(writer.time_until_due().unwrap()).await;
    assert_eq!(writer.flush_if_due().await.unwrap(), 1);
    writer.write(&event(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    writer.write(&event(3)).await.unwrap(); // the age check on write flushes both
    assert_eq!(count(&db, "events").await, 3);

    // Cancel a large flush while it is in flight: nothing of it is committed and the single
    // pooled connection is usable afterwards. Another session holds the table locked, so the
    // COPY is certainly still running when the flush is dropped (a timer alone raced: on loopback
    // all of its data can be sent before any timer fires, and then the server commits it).
    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(t.url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let big: Vec<Event> = (10..150_010).map(event).collect();
    let mut big_writer = CopyWriter::<Event>::new(&db, "events")
        .unwrap()
        .with_config(CopyConfig {
            flush_bytes: 1 << 30,
            // Buffering 150,000 rows can take over the default second on a loaded machine;
            // an age flush then would block on the lock inside write_all.
            flush_interval: Duration::from_secs(3600),
            ..config(CopyFormat::Binary, 1_000_000)
        })
        .unwrap();
    big_writer.write_all(&big).await.unwrap();
    assert_eq!(big_writer.buffered_rows(), 150_000);
    tokio::select! {
        biased;
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
        flushed = big_writer.flush() => panic!("a COPY into a locked table finished: {flushed:?}"),
    }
    drop(big_writer);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    assert_eq!(count(&db, "events").await, 3);
    assert!(db.health().await.is_ok());
}

async fn a_row_with_the_wrong_number_of_fields_is_refused_before_sending(route: PgRoute) {
    struct Short(Uuid);
    impl CopyRow for Short {
        const COLUMNS: &'static [&'static str] = &["id", "name"];
        fn write_row(&self, row: &mut RowWriter<'_>) {
            row.field(&self.0);
        }
    }
    let (_t, db) = setup(route, &[EVENTS]).await;
    let mut writer = CopyWriter::<Short>::new(&db, "events").unwrap();
    let err = writer.write(&Short(Uuid::now_v7())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(err.to_string().contains("row 0 wrote 1 fields"), "{err}");
    assert_eq!(writer.buffered_rows(), 0);
    assert!(CopyWriter::<Short>::new(&db, "events; drop table events").is_err());
}

neo_testkit::over_routes!(
    binary_and_text_copy_store_every_type_exactly,
    a_bad_row_fails_its_flush_only_names_the_row_and_leaves_the_pool_healthy,
    a_duplicate_key_is_already_exists_and_upsert_goes_through_staging,
    rows_are_flushed_by_age_and_a_dropped_flush_does_not_poison_the_connection,
    a_row_with_the_wrong_number_of_fields_is_refused_before_sending,
);
