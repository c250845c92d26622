//! neo-core's `sqlx` encodings and signed cursors against a real PostgreSQL.

use neo_core::{
    CountryCode, CursorCodec, CursorRequest, EmailAddress, Metadata, MetadataLimits,
    OrganizationId, PaginationConfig, Slug,
};
use serde_json::json;
use std::collections::BTreeSet;

async fn pool() -> (neo_testkit::TestDatabase, sqlx::PgPool) {
    let db = neo_testkit::postgres().await;
    let pool = db.pool().await.expect("pool");
    sqlx::query(
        "CREATE TABLE orgs (id uuid PRIMARY KEY, slug text NOT NULL UNIQUE, email text NOT NULL,
                            country char(2) NOT NULL, metadata jsonb NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("create table");
    (db, pool)
}

#[tokio::test]
async fn typed_values_round_trip_singly_and_as_arrays() {
    let (_db, pool) = pool().await;
    let limits = MetadataLimits::default();
    let ids: Vec<OrganizationId> = (0..3).map(|_| OrganizationId::new()).collect();
    let slugs: Vec<Slug> = ["acme", "globex", "initech"]
        .iter()
        .map(|s| Slug::parse(s).unwrap())
        .collect();
    let emails: Vec<EmailAddress> = slugs
        .iter()
        .map(|s| EmailAddress::parse(&format!("o@{s}.io")).unwrap())
        .collect();
    let countries: Vec<CountryCode> = ["DE", "US", "FR"]
        .iter()
        .map(|c| CountryCode::parse(c).unwrap())
        .collect();
    let metadata: Vec<Metadata> = (0..3)
        .map(|i| Metadata::new(json!({"n": i}), &limits).unwrap())
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO orgs SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[])",
    )
    .bind(&ids)
    .bind(&slugs)
    .bind(&emails)
    .bind(&countries)
    .bind(&metadata)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), 3);

    let rows: Vec<(OrganizationId, Slug, EmailAddress, String, Metadata)> = sqlx::query_as(
        "SELECT id, slug, email, country::text, metadata FROM orgs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for (i, (id, slug, email, country, meta)) in rows.into_iter().enumerate() {
        assert_eq!(id, ids[i], "v7 ids come back in creation order");
        assert_eq!(slug, slugs[i]);
        assert_eq!(email, emails[i]);
        assert_eq!(country, countries[i].as_str());
        assert_eq!(meta, metadata[i]);
    }
    let one: OrganizationId = sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1")
        .bind(&slugs[1])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, ids[1]);
}

#[tokio::test]
async fn invalid_stored_values_are_refused_on_decode() {
    let (_db, pool) = pool().await;
    let v4 = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
    sqlx::query("INSERT INTO orgs VALUES ($1, 'Bad Slug', 'x@y.io', 'DE', '{}')")
        .bind(v4)
        .execute(&pool)
        .await
        .unwrap();
    let id_err = sqlx::query_scalar::<_, OrganizationId>("SELECT id FROM orgs")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(id_err.to_string().contains("version-7"), "{id_err}");
    let slug_err = sqlx::query_scalar::<_, Slug>("SELECT slug FROM orgs")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(slug_err.to_string().contains("invalid slug"), "{slug_err}");
}

#[tokio::test]
async fn keyset_pages_with_signed_cursors_visit_every_row_once() {
    let (_db, pool) = pool().await;
    let ids: Vec<OrganizationId> = (0..47).map(|_| OrganizationId::new()).collect();
    let slugs: Vec<String> = (0..47).map(|i| format!("org-{i:03}")).collect();
    // A sort key with duplicates (only 5 distinct countries): the id tiebreak keeps pages exact.
    let countries: Vec<&str> = (0..47)
        .map(|i| ["DE", "FR", "US", "JP", "BR"][i % 5])
        .collect();
    sqlx::query(
        "INSERT INTO orgs SELECT id, slug, slug || '@x.io', c, '{}' FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS t(id, slug, c)",
    )
    .bind(&ids)
    .bind(&slugs)
    .bind(&countries)
    .execute(&pool)
    .await
    .unwrap();

    let codec = CursorCodec::new(vec![42; 32]).unwrap();
    let config = PaginationConfig {
        max_limit: 10,
        ..PaginationConfig::default()
    };
    let mut request: CursorRequest<(String, OrganizationId)> =
        CursorRequest::first(Some(1000), &config);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (after_country, after_id) = match request.position() {
            Some((c, id)) => (Some(c.clone()), Some(*id)),
            None => (None, None),
        };
        let limit = i64::from(request.limit());
        let mut rows: Vec<(String, OrganizationId)> = sqlx::query_as(
            "SELECT country::text, id FROM orgs
             WHERE $1::text IS NULL OR (country::text, id) > ($1, $2)
             ORDER BY country, id LIMIT $3",
        )
        .bind(after_country)
        .bind(after_id)
        .bind(limit + 1)
        .fetch_all(&pool)
        .await
        .unwrap();
        pages += 1;
        let has_next = rows.len() as i64 > limit;
        rows.truncate(request.limit() as usize);
        seen.extend(rows.iter().map(|(_, id)| *id));
        let Some(last) = rows.last().filter(|_| has_next) else {
            break;
        };
        // The client only ever sees the opaque token.
        let token = codec.encode(last).unwrap();
        let position: (String, OrganizationId) = codec.decode(&token).unwrap();
        request = CursorRequest::after(position, Some(10), &config);
    }
    assert_eq!(pages, 5, "47 rows at 10 per page");
    assert_eq!(seen.len(), 47, "no row repeated or skipped");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 47);
}
