//! The smallest service on neo-commons: notes in PostgreSQL (neo-db), read through a tiered
//! cache (neo-cache: moka in process, Redis shared). `main.rs` runs it; the scenario suite
//! (`tests/`) runs [`serve`] against its test servers.

use axum::extract::{Path, State};
use axum::{Json, Router, http::StatusCode, routing::get, routing::post};
use neo_cache::{Cache, CacheConfig, HybridCache};
use neo_db::{Db, DbConfig, MigrationSet, sqlx};
use serde::{Deserialize, Serialize};

/// Errors of starting or running the service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A note, as stored and as served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    /// Its id.
    pub id: i64,
    /// Its text.
    pub text: String,
}

#[derive(Clone)]
struct App {
    db: Db,
    notes: HybridCache<Note>,
}

/// Serves `POST /notes` (a JSON string) and `GET /notes/{id}` on `listener` until `shutdown`
/// completes, then finishes the requests in flight and closes the cache and the pool.
///
/// # Errors
/// A server that cannot be reached, a failed migration, a listener error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: &DbConfig,
    cache: CacheConfig,
    redis_url: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let db = Db::connect(db).await?;
    let notes_table = "CREATE TABLE notes (id bigserial PRIMARY KEY, text text NOT NULL)";
    MigrationSet::new("minimal")?
        .with(1, "notes", notes_table)
        .run(&db)
        .await?;
    let app = App {
        db: db.clone(),
        notes: HybridCache::tiered(cache, redis_url)?,
    };
    let router = Router::new()
        .route("/notes", post(create))
        .route("/notes/{id}", get(read))
        .with_state(app.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    app.notes.shutdown().await;
    db.close().await;
    Ok(())
}

async fn create(
    State(app): State<App>,
    Json(text): Json<String>,
) -> Result<Json<Note>, StatusCode> {
    let id = sqlx::query_scalar("INSERT INTO notes (text) VALUES ($1) RETURNING id")
        .bind(&text)
        .fetch_one(app.db.pool())
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(Note { id, text }))
}

async fn read(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Note>, StatusCode> {
    let db = app.db.clone(); // the loader may outlive this request: it owns what it uses
    let load = move || async move {
        sqlx::query_as::<_, (i64, String)>("SELECT id, text FROM notes WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .map(|row| row.map(|(id, text)| Note { id, text }))
    };
    let note = app.notes.get_or_load(&id.to_string(), load).await;
    note.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}
