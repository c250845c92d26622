//! Connects to PostgreSQL and Redis, stores a few organizations with neo-core's typed ids and
//! value objects, pages through them with a signed cursor, caches one in Redis, and prints
//! what happened.
//!
//! Run it with `scripts/demo`, which installs and starts both servers. To use your own:
//! `NEO_DATABASE_URL=postgres://... NEO_REDIS_URL=redis://... cargo run -p hello-servers`.
#![allow(clippy::print_stdout, reason = "a demo prints what it does")]

use neo_commons::core::{
    CountryCode, CursorCodec, EmailAddress, ExposeSecret as _, Metadata, MetadataLimits,
    OrganizationId, SecretString, Slug,
};
use redis::AsyncCommands as _;
use serde::Deserialize;
use std::error::Error;
use std::time::Instant;

/// Where the servers are, from `NEO_DATABASE_URL` and `NEO_REDIS_URL`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DemoConfig {
    database_url: Option<SecretString>,
    redis_url: Option<SecretString>,
    /// Key that signs pagination cursors (`NEO_CURSOR_KEY`); a demo key when unset.
    cursor_key: Option<SecretString>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let config: DemoConfig = neo_commons::core::config::from_env("NEO_")?;
    let database_url = config
        .database_url
        .ok_or("set NEO_DATABASE_URL (scripts/demo starts a server and sets it for you)")?;
    let redis_url = config
        .redis_url
        .ok_or("set NEO_REDIS_URL (scripts/demo starts a server and sets it for you)")?;

    println!("neo-commons demo: PostgreSQL + Redis with neo-core types\n");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(database_url.expose_secret())
        .await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    println!("[postgres] connected, server version {version}");

    sqlx::query(
        "CREATE TABLE IF NOT EXISTS demo_organizations (
             id uuid PRIMARY KEY, slug text NOT NULL UNIQUE, owner text NOT NULL,
             country text NOT NULL, metadata jsonb NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("TRUNCATE demo_organizations")
        .execute(&pool)
        .await?;

    let limits = MetadataLimits::default();
    let names = [
        "Acme Corp",
        "Globex",
        "Initech",
        "Umbrella Labs",
        "Stark Industries",
        "Wayne Enterprises",
    ];
    let mut ids = Vec::new();
    let mut slugs = Vec::new();
    let mut owners = Vec::new();
    let mut countries = Vec::new();
    let mut metadata = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let slug = Slug::slugify(name)?;
        ids.push(OrganizationId::new());
        owners.push(EmailAddress::parse(&format!(
            "owner@{}.example",
            slug.as_str()
        ))?);
        countries.push(CountryCode::parse(["de", "us", "fr"][i % 3])?);
        metadata.push(Metadata::new(
            serde_json::json!({ "plan": "pro", "seats": 5 + i }),
            &limits,
        )?);
        slugs.push(slug);
    }
    let started = Instant::now();
    let inserted = sqlx::query(
        "INSERT INTO demo_organizations (id, slug, owner, country, metadata)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[])",
    )
    .bind(&ids)
    .bind(&slugs)
    .bind(&owners)
    .bind(&countries)
    .bind(&metadata)
    .execute(&pool)
    .await?
    .rows_affected();
    println!(
        "[postgres] inserted {inserted} organizations in one UNNEST statement ({:?})",
        started.elapsed()
    );

    match Slug::parse("Not A Slug") {
        Ok(_) => println!("[core] unexpected: an invalid slug was accepted"),
        Err(e) => println!("[core] bad input is refused before any SQL: {e}"),
    }

    let key = config
        .cursor_key
        .map(|k| k.expose_secret().as_bytes().to_vec())
        .unwrap_or_else(|| b"demo-only-cursor-key-0123456789abcdef".to_vec());
    let codec = CursorCodec::new(key)?;
    const PAGE: usize = 3;
    let mut cursor: Option<String> = None;
    let mut last_cursor = None;
    let mut page_no = 1;
    loop {
        let after: Option<OrganizationId> =
            cursor.as_deref().map(|c| codec.decode(c)).transpose()?;
        // Fetch one row more than the page holds: it says whether a next page exists.
        let mut rows: Vec<(OrganizationId, Slug)> = sqlx::query_as(
            "SELECT id, slug FROM demo_organizations WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::try_from(PAGE + 1)?)
        .fetch_all(&pool)
        .await?;
        let has_next = rows.len() > PAGE;
        rows.truncate(PAGE);
        let slugs: Vec<&str> = rows.iter().map(|(_, s)| s.as_str()).collect();
        println!(
            "[postgres] keyset page {page_no}: {} (next page: {has_next})",
            slugs.join(", ")
        );
        match rows.last() {
            Some((last, _)) if has_next => cursor = Some(codec.encode(last)?),
            _ => break,
        }
        last_cursor.clone_from(&cursor);
        page_no += 1;
    }
    if let Some(token) = &last_cursor {
        let mut tampered = token.clone();
        tampered.push('A');
        if let Err(e) = codec.decode::<OrganizationId>(&tampered) {
            println!("[core] a tampered cursor is refused: {e}");
        }
    }

    let redis = redis::Client::open(redis_url.expose_secret())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let (id, slug) = (ids[0], &slugs[0]);
    let key = format!("demo:org:{id}");
    let payload = serde_json::json!({ "id": id, "slug": slug, "owner": owners[0] }).to_string();
    let () = conn.set_ex(&key, &payload, 60).await?;
    let cached: Option<String> = conn.get(&key).await?;
    let ttl: i64 = conn.ttl(&key).await?;
    println!(
        "[redis] cached {slug} under {key} (ttl {ttl}s): {}",
        cached.unwrap_or_default()
    );
    let back: serde_json::Value = serde_json::from_str(&payload)?;
    let parsed: OrganizationId = serde_json::from_value(back["id"].clone())?;
    println!(
        "[core] the id read back is the same typed id, created at {}",
        parsed.created_at()
    );
    println!("\ndemo finished: both servers answered");
    Ok(())
}
