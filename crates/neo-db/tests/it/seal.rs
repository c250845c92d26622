//! `Sealed<T>` columns through the batch repository (feature `seal`).

use crate::setup;
use neo_core::SecretString;
use neo_db::seal::{Binding, SealConfig, SealProblem, Sealed, Sealer};
use neo_db::{BatchRepository, Column, ColumnBinder, Error, OnConflict, Record};
use uuid::Uuid;

const ACCOUNTS: &str = "CREATE TABLE accounts (
    id uuid PRIMARY KEY,
    holder text NOT NULL,
    card_number bytea NOT NULL,
    api_token bytea
)";
const KEY_1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A row with a sealed column and an optional sealed column.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Account {
    id: Uuid,
    holder: String,
    card_number: Sealed<String>,
    api_token: Option<Sealed<SecretString>>,
}

impl Record for Account {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("id"),
        Column::new("holder"),
        Column::new("card_number"),
        Column::new("api_token"),
    ];

    fn id(&self) -> &Uuid {
        &self.id
    }

    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |a| a.id)?;
        b.column("holder", |a| a.holder.as_str())?;
        b.column("card_number", |a| &a.card_number)?;
        b.column("api_token", |a| a.api_token.clone())
    }
}

fn sealer() -> Sealer {
    Sealer::from_config(&SealConfig {
        current_key_id: "k1".into(),
        keys: [("k1".to_owned(), SecretString::from(KEY_1))].into(),
        ..SealConfig::default()
    })
    .unwrap()
}

fn card_binding(row: &str) -> Binding<'_> {
    Binding::new("accounts", "card_number", row)
}

fn card(n: usize) -> String {
    format!("4111-0000-0000-{n:04}")
}

#[tokio::test]
async fn sealed_columns_save_and_load_through_the_batch_repository() {
    let (_t, db) = setup(neo_testkit::PgRoute::Direct, &[ACCOUNTS]).await;
    let sealer = sealer();
    let repo = BatchRepository::<Account>::new(&db, "accounts").unwrap();
    let mut accounts = Vec::new();
    for n in 0..25 {
        let id = Uuid::now_v7();
        let row = id.to_string();
        let api_token = if n % 2 == 0 {
            let token = SecretString::from(format!("tok-{n}-d41d8cd9"));
            let here = Binding::new("accounts", "api_token", &row);
            Some(Sealed::seal(&sealer, &token, &here).await.unwrap())
        } else {
            None
        };
        accounts.push(Account {
            id,
            holder: format!("holder {n}"),
            card_number: Sealed::seal(&sealer, &card(n), &card_binding(&row))
                .await
                .unwrap(),
            api_token,
        });
    }
    assert_eq!(
        repo.save_batch(&db, &accounts, OnConflict::Error)
            .await
            .unwrap(),
        25
    );

    // Nothing of a card number or token is in the table.
    let dump: Vec<String> = sqlx::query_scalar("SELECT t::text FROM accounts t")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let dump = dump.join("\n");
    for n in 0..25 {
        assert!(!dump.contains(&card(n)), "card {n} is in the table");
        assert!(
            !dump.contains(&format!("tok-{n}-")),
            "token {n} is in the table"
        );
    }

    let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
    let loaded = repo.load_batch(&db, &ids).await.unwrap();
    for (n, (account, loaded)) in accounts.iter().zip(&loaded).enumerate() {
        let loaded = loaded.as_ref().unwrap();
        assert_eq!(loaded, account);
        let row = loaded.id.to_string();
        assert_eq!(
            loaded
                .card_number
                .open(&sealer, &card_binding(&row))
                .await
                .unwrap(),
            card(n)
        );
        if let Some(token) = &loaded.api_token {
            use neo_core::ExposeSecret;
            let here = Binding::new("accounts", "api_token", &row);
            let open = token.open(&sealer, &here).await.unwrap();
            assert_eq!(open.expose_secret(), format!("tok-{n}-d41d8cd9"));
        }
    }

    // A card number moved to another row (in the database) does not open there.
    sqlx::query("UPDATE accounts SET card_number = (SELECT card_number FROM accounts WHERE id = $1) WHERE id = $2")
        .bind(ids[0])
        .bind(ids[1])
        .execute(db.pool())
        .await
        .unwrap();
    let moved = repo.load_batch(&db, &ids[1..2]).await.unwrap()[0]
        .clone()
        .unwrap();
    let row = ids[1].to_string();
    match moved.card_number.open(&sealer, &card_binding(&row)).await {
        Err(Error::Seal { key_id, problem }) => {
            assert_eq!((key_id.as_str(), problem), ("k1", SealProblem::DoesNotOpen));
        }
        other => panic!("expected DoesNotOpen, got {other:?}"),
    }

    // Bytes that are not a sealed value fail to decode (a typed error, not garbage).
    sqlx::query("UPDATE accounts SET card_number = '\\x0102'::bytea WHERE id = $1")
        .bind(ids[2])
        .execute(db.pool())
        .await
        .unwrap();
    assert!(repo.load_batch(&db, &ids[2..3]).await.is_err());
}
