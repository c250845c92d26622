//! `webhook-worker`: runs report jobs and webhook delivery on `NEO_DATABASE_URL` until Ctrl-C,
//! then shuts down gracefully. No HTTP API: enqueue `report.build` jobs from another process.
#![allow(clippy::print_stdout, reason = "the binary reports what it did")]

use neo_commons::db::DbConfig;
use webhook_worker::{BoxError, Config, WorkerService};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("NEO_DATABASE_URL").map_err(|_| "NEO_DATABASE_URL is not set")?;
    let config = Config {
        db: DbConfig::with_url(url),
        ..Config::default()
    };
    let service = WorkerService::compose(config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    println!("worker running; Ctrl-C stops it");
    let report = service.run(stopped).await?;
    println!(
        "stopped: {} jobs succeeded, {} failed",
        report.succeeded, report.failed
    );
    Ok(())
}
