//! The example service's background roles (outbox dispatch and webhook delivery) in a process
//! of their own, configured from the environment, so a scenario can kill it mid-job.
#![allow(clippy::print_stderr, reason = "a child process reports on stderr")]

use orgs_service::{Roles, Service, ServiceConfig};

#[tokio::main]
async fn main() {
    let result = async {
        let service = Service::compose(ServiceConfig::from_env()?).await?;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        service.run(Roles::background(true, true), stopped).await
    }
    .await;
    if let Err(error) = result {
        eprintln!("scenario-worker: {error}");
        std::process::exit(1);
    }
}
