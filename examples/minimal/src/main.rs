//! `minimal-service`: the notes API on `NEO_MINIMAL_ADDR` (default 127.0.0.1:8080) until
//! Ctrl-C, on `NEO_DATABASE_URL` and `NEO_REDIS_URL` (`scripts/demo` starts a throwaway pair).
#![allow(clippy::print_stdout, reason = "the binary says where it listens")]

use minimal_service::{BoxError, serve};
use neo_cache::CacheConfig;
use neo_db::DbConfig;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let addr = var("NEO_MINIMAL_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("notes API on http://{addr}; Ctrl-C stops it");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (db, redis) = (
        DbConfig::with_url(var("NEO_DATABASE_URL")?),
        var("NEO_REDIS_URL")?,
    );
    serve(listener, &db, CacheConfig::named("notes"), &redis, stop).await
}
