//! Rotation of a user's sealed columns: the background re-sealer (resumable, compare-and-set)
//! and retiring a key for every instance through the key registry (feature `seal`).

use crate::setup;
use neo_core::SecretString;
use neo_db::diagnostics::lock_waits;
use neo_db::seal::{
    Binding, KeyRegistry, KeyRegistryConfig, ResealConfig, ResealPosition, ResealProgress,
    ResealTarget, Resealer, SealConfig, SealProblem, Sealed, Sealer, StaticKeyProvider,
};
use neo_db::{Db, Error};
use neo_testkit::PgRoute;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const CARDS: &str = "CREATE TABLE cards (
    id uuid PRIMARY KEY,
    number bytea NOT NULL,
    pin bytea
)";
const KEY_1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn config(current: &str, keys: &[(&str, &str)]) -> SealConfig {
    SealConfig {
        current_key_id: current.into(),
        keys: keys
            .iter()
            .map(|(id, key)| ((*id).to_owned(), SecretString::from(*key)))
            .collect(),
        ..SealConfig::default()
    }
}

fn sealer_k1() -> Sealer {
    Sealer::from_config(&config("k1", &[("k1", KEY_1)])).unwrap()
}

/// A sealer as an instance has it after the rotation: k2 current, k1 still configured.
fn sealer_k2_with_k1() -> Sealer {
    Sealer::from_config(&config("k2", &[("k1", KEY_1), ("k2", KEY_2)])).unwrap()
}

fn rotate(sealer: &Sealer) {
    let provider =
        StaticKeyProvider::from_config(&config("k2", &[("k1", KEY_1), ("k2", KEY_2)])).unwrap();
    sealer.replace_provider(Arc::new(provider));
}

/// `n` cards sealed under `sealer`'s current key; every other one has a pin. Returns ids.
async fn insert_cards(db: &Db, sealer: &Sealer, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = Uuid::now_v7();
        let row = id.to_string();
        let number = Sealed::seal(
            sealer,
            &format!("4111-{i:04}"),
            &Binding::new("cards", "number", &row),
        )
        .await
        .unwrap();
        let pin = if i % 2 == 0 {
            Some(
                Sealed::seal(
                    sealer,
                    &format!("{i:04}"),
                    &Binding::new("cards", "pin", &row),
                )
                .await
                .unwrap(),
            )
        } else {
            None
        };
        sqlx::query("INSERT INTO cards (id, number, pin) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(&number)
            .bind(&pin)
            .execute(db.pool())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn resealer(db: &Db, sealer: &Sealer, batch_size: u32, pause: Duration) -> Resealer {
    Resealer::new(
        db,
        sealer,
        ResealTarget::new("cards", &["id"], &["number", "pin"]).unwrap(),
        ResealConfig { batch_size, pause },
    )
    .await
    .unwrap()
}

/// Every card opens with `sealer` to what `insert_cards` sealed.
async fn assert_cards_open(db: &Db, sealer: &Sealer, ids: &[Uuid]) {
    for (i, id) in ids.iter().enumerate() {
        let (number, pin): (Sealed<String>, Option<Sealed<String>>) =
            sqlx::query_as("SELECT number, pin FROM cards WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        let row = id.to_string();
        let here = Binding::new("cards", "number", &row);
        assert_eq!(
            number.open(sealer, &here).await.unwrap(),
            format!("4111-{i:04}")
        );
        let pin = match pin {
            Some(pin) => Some(
                pin.open(sealer, &Binding::new("cards", "pin", &row))
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        assert_eq!(pin, (i % 2 == 0).then(|| format!("{i:04}")));
    }
}

#[tokio::test]
async fn a_stopped_reseal_resumes_from_its_position_and_moves_every_row_to_the_new_key() {
    let (_t, db) = setup(PgRoute::Direct, &[CARDS]).await;
    let sealer = sealer_k1();
    let ids = insert_cards(&db, &sealer, 120).await;
    rotate(&sealer);
    let resealer = resealer(&db, &sealer, 20, Duration::from_millis(200)).await;
    assert_eq!(resealer.rows_under("k1").await.unwrap(), 120);
    assert_eq!(resealer.remaining().await.unwrap(), 120);

    // A pass stopped (the task aborted, as a crash would) after its third batch.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ResealProgress>();
    let pass = {
        let resealer = resealer.clone();
        tokio::spawn(async move {
            resealer
                .run(None, |p| {
                    let _ = tx.send(p.clone());
                })
                .await
        })
    };
    let mut last = ResealProgress::default();
    while let Some(progress) = rx.recv().await {
        last = progress;
        if last.batches == 3 {
            pass.abort();
            break;
        }
    }
    assert!(pass.await.unwrap_err().is_cancelled());
    assert_eq!(
        (last.resealed, last.changed, last.failed, last.to_do),
        (60, 0, 0, 120)
    );
    let position = last.position.clone().unwrap();
    let left = resealer.rows_under("k1").await.unwrap();
    assert_eq!(
        left, 60,
        "the pass stopped during its pause, after three batches"
    );

    // The stored position survives a restart (it serializes) and resumes after it.
    let stored = serde_json::to_string(&position).unwrap();
    let position: ResealPosition = serde_json::from_str(&stored).unwrap();
    let mut reports = Vec::new();
    let resumed = resealer
        .run(Some(position), |p| reports.push(p.clone()))
        .await
        .unwrap();
    assert_eq!(resumed.resealed, 60, "{resumed:?}");
    assert_eq!(resumed.to_do, 60);
    assert_eq!(resumed.remaining, Some(0));
    assert_eq!(
        resumed.batches, 4,
        "60 rows: three full pages of 20, then an empty one"
    );
    assert!(reports.len() >= 3);
    assert_eq!(resealer.rows_under("k1").await.unwrap(), 0);
    assert_eq!(resealer.rows_under("k2").await.unwrap(), 120);

    // Only k2 is needed now: every value opens with a sealer that holds k2 alone.
    let k2_only = Sealer::from_config(&config("k2", &[("k2", KEY_2)])).unwrap();
    assert_cards_open(&db, &k2_only, &ids).await;

    // A pass from the start finds nothing left to do.
    let again = resealer.run(None, |_| {}).await.unwrap();
    assert_eq!(
        (again.resealed, again.to_do, again.remaining),
        (0, 0, Some(0))
    );
}

#[tokio::test]
async fn a_row_written_during_a_pass_is_not_overwritten_with_its_stale_value() {
    let (_t, db) = setup(PgRoute::Direct, &[CARDS]).await;
    let sealer = sealer_k1();
    let ids = insert_cards(&db, &sealer, 10).await;
    rotate(&sealer);
    let resealer = resealer(&db, &sealer, 100, Duration::ZERO).await;

    // A writer changes card 3 and holds its transaction open while the pass reads the page.
    let row = ids[3].to_string();
    let fresh = Sealed::seal(
        &sealer,
        &"5500-fresh".to_owned(),
        &Binding::new("cards", "number", &row),
    )
    .await
    .unwrap();
    let mut writer = db.begin().await.unwrap();
    sqlx::query("UPDATE cards SET number = $2 WHERE id = $1")
        .bind(ids[3])
        .bind(&fresh)
        .execute(&mut **writer)
        .await
        .unwrap();
    let pass = {
        let resealer = resealer.clone();
        tokio::spawn(async move { resealer.run(None, |_| {}).await })
    };
    // The pass has read the old value of card 3 and waits on the writer's row lock.
    let mut waited = false;
    for _ in 0..200 {
        if lock_waits(&db)
            .await
            .unwrap()
            .iter()
            .any(|w| w.waiting_query.contains("UNNEST"))
        {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waited, "the pass never waited on the writer");
    writer.commit().await.unwrap();
    let done = pass.await.unwrap().unwrap();
    assert_eq!(
        (done.resealed, done.changed, done.failed),
        (9, 1, 0),
        "{done:?}"
    );
    assert_eq!(
        done.remaining,
        Some(0),
        "the writer sealed under k2 already"
    );

    let stored: Sealed<String> = sqlx::query_scalar("SELECT number FROM cards WHERE id = $1")
        .bind(ids[3])
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, fresh, "the writer's value stays");
    assert_eq!(
        stored
            .open(&sealer, &Binding::new("cards", "number", &row))
            .await
            .unwrap(),
        "5500-fresh"
    );
}

#[tokio::test]
async fn a_key_retired_by_one_instance_is_refused_by_every_instance() {
    let (_t, db) = setup(PgRoute::Direct, &[CARDS]).await;
    let old_instance = sealer_k1();
    let ids = insert_cards(&db, &old_instance, 6).await;
    let row = ids[0].to_string();
    let here = Binding::new("cards", "number", &row);
    let old_value: Sealed<String> = sqlx::query_scalar("SELECT number FROM cards WHERE id = $1")
        .bind(ids[0])
        .fetch_one(db.pool())
        .await
        .unwrap();

    // Instances A, B and C after the rollout: k2 current, k1 still configured.
    let (a, b, c) = (
        sealer_k2_with_k1(),
        sealer_k2_with_k1(),
        sealer_k2_with_k1(),
    );
    let registry_a = KeyRegistry::install(&db, &a, KeyRegistryConfig::default())
        .await
        .unwrap();
    let registry_b = KeyRegistry::install(&db, &b, KeyRegistryConfig::default())
        .await
        .unwrap();
    let registry_c = KeyRegistry::install(
        &db,
        &c,
        KeyRegistryConfig {
            refresh_interval: Duration::from_millis(50),
            ..KeyRegistryConfig::default()
        },
    )
    .await
    .unwrap();
    let refresher = registry_c.spawn_refresh();
    let resealer = resealer(&db, &a, 4, Duration::ZERO).await;

    // Refused while rows use it, and the current key is never retired.
    let refused = registry_a.retire("k1", &[&resealer]).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Seal { key_id, problem: SealProblem::StillInUse { rows: 6 } } if key_id == "k1"),
        "{refused:?}"
    );
    assert!(registry_a.retire("k2", &[]).await.is_err());
    assert!(!a.is_retired("k1"));

    let done = resealer.run(None, |_| {}).await.unwrap();
    assert_eq!((done.resealed, done.remaining), (6, Some(0)));
    registry_a.retire("k1", &[&resealer]).await.unwrap();

    // A refuses at once; B still opens until it refreshes, then refuses; C's refresher learns it.
    let error = old_value.open(&a, &here).await.unwrap_err();
    assert!(
        matches!(&error, Error::Seal { key_id, problem: SealProblem::Retired } if key_id == "k1"),
        "{error:?}"
    );
    assert_eq!(old_value.open(&b, &here).await.unwrap(), "4111-0000");
    assert_eq!(registry_b.refresh().await.unwrap(), vec!["k1".to_owned()]);
    assert!(matches!(
        old_value.open(&b, &here).await,
        Err(Error::Seal {
            problem: SealProblem::Retired,
            ..
        })
    ));
    let mut learned = false;
    for _ in 0..100 {
        if c.is_retired("k1") {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(learned, "C's refresher never read the retirement");
    refresher.abort();

    // A straggler still sealing under k1 learns it and stops sealing under it.
    let straggler_registry = KeyRegistry::install(&db, &old_instance, KeyRegistryConfig::default())
        .await
        .unwrap();
    assert_eq!(
        straggler_registry.refresh().await.unwrap(),
        vec!["k1".to_owned()]
    );
    assert!(matches!(
        Sealed::seal(&old_instance, &"x".to_owned(), &here).await,
        Err(Error::Seal {
            problem: SealProblem::Retired,
            ..
        })
    ));
    // The re-sealed rows open under k2 everywhere.
    assert_cards_open(&db, &b, &ids).await;
}

#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn reseal_and_registry_settings_load_from_neo_db_seal_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_DB_URL", "postgres://app@db/app");
        jail.set_env("NEO_DB_SEAL__CURRENT_KEY_ID", "k1");
        jail.set_env("NEO_DB_SEAL__KEYS__K1", KEY_1);
        jail.set_env("NEO_DB_SEAL__RESEAL__BATCH_SIZE", "50");
        jail.set_env("NEO_DB_SEAL__RESEAL__PAUSE", "250ms");
        jail.set_env("NEO_DB_SEAL__REGISTRY__TABLE", "keys.retired");
        jail.set_env("NEO_DB_SEAL__REGISTRY__REFRESH_INTERVAL", "5s");
        let seal = neo_db::DbConfig::from_env().unwrap().seal;
        assert_eq!(
            seal.reseal,
            ResealConfig {
                batch_size: 50,
                pause: Duration::from_millis(250)
            }
        );
        assert_eq!(
            seal.registry,
            KeyRegistryConfig {
                table: "keys.retired".into(),
                refresh_interval: Duration::from_secs(5)
            }
        );
        let defaults = SealConfig::default();
        assert_eq!(
            (defaults.reseal.batch_size, defaults.registry.table.as_str()),
            (500, "neo_seal_keys")
        );
        Ok(())
    });
}

#[tokio::test]
async fn a_composite_key_is_walked_in_order_and_bad_targets_are_refused() {
    let (_t, db) = setup(
        PgRoute::Direct,
        &[
            "CREATE SCHEMA billing",
            "CREATE TABLE billing.notes (tenant text NOT NULL, n int8 NOT NULL, body bytea, plain text, \
             PRIMARY KEY (tenant, n))",
        ],
    )
    .await;
    let sealer = sealer_k1();
    for tenant in ["acme", "globex"] {
        for n in 0..15_i64 {
            let row = ResealTarget::row_of(&[tenant, &n.to_string()]);
            let body = Sealed::seal(
                &sealer,
                &format!("{tenant} note {n}"),
                &Binding::new("notes", "body", &row),
            )
            .await
            .unwrap();
            sqlx::query("INSERT INTO billing.notes (tenant, n, body) VALUES ($1, $2, $3)")
                .bind(tenant)
                .bind(n)
                .bind(&body)
                .execute(db.pool())
                .await
                .unwrap();
        }
    }
    rotate(&sealer);
    let target = ResealTarget::new("billing.notes", &["tenant", "n"], &["body"])
        .unwrap()
        .binding_table("notes");
    let resealer = Resealer::new(
        &db,
        &sealer,
        target,
        ResealConfig {
            batch_size: 7,
            pause: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    let mut positions = Vec::new();
    let done = resealer
        .run(None, |p| {
            positions.push(p.position.clone());
        })
        .await
        .unwrap();
    assert_eq!(
        (done.resealed, done.failed, done.remaining),
        (30, 0, Some(0)),
        "{done:?}"
    );
    assert_eq!(done.batches, 5, "30 rows in pages of 7");
    assert_eq!(
        positions[0],
        Some(ResealPosition(vec!["acme".into(), "6".into()])),
        "keyset order: tenant, then n as a number"
    );
    let k2_only = Sealer::from_config(&config("k2", &[("k2", KEY_2)])).unwrap();
    let body: Sealed<String> =
        sqlx::query_scalar("SELECT body FROM billing.notes WHERE tenant = 'globex' AND n = 14")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        body.open(&k2_only, &Binding::new("notes", "body", "globex/14"))
            .await
            .unwrap(),
        "globex note 14"
    );

    // Targets that do not fit the table are refused, naming what is wrong.
    for (keys, sealed, says) in [
        (
            &["tenant", "n"][..],
            &["missing"][..],
            "no column \"missing\"",
        ),
        (&["tenant", "n"][..], &["plain"][..], "is text, not bytea"),
    ] {
        let target = ResealTarget::new("billing.notes", keys, sealed).unwrap();
        let error = Resealer::new(&db, &sealer, target, ResealConfig::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(says), "{error}");
    }
    assert!(
        ResealTarget::new("notes", &["n"], &["n"]).is_err(),
        "a column named twice"
    );
    assert!(ResealTarget::new("notes", &[], &["body"]).is_err());
    assert!(ResealTarget::new("no\"tes", &["n"], &["body"]).is_err());
}
