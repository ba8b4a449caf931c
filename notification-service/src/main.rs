//! `notification-service`: run the service, or `notification-service healthcheck` to probe a
//! running one's `/healthz` (exit code 0 when healthy, 1 otherwise; for container checks).

use anyhow::Context as _;
use notification_service::{App, Config};
use shared::{ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("invalid configuration")?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let healthy = ops::healthcheck(config.ops_addr).await;
        std::process::exit(if healthy { 0 } else { 1 });
    }
    telemetry::init(config.log_format, &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let app = App::build(config, shutdown::signal()).await.context("notification-service failed to start")?;
    app.run_until_stopped().await;
    Ok(())
}
