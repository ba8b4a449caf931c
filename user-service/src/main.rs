//! The `user-service` binary: `user-service` runs the service, `user-service healthcheck`
//! asks a running one for `/healthz` (exit code 0 or 1), for container health checks.

use std::process::ExitCode;

use shared::{ops, shutdown, telemetry};
use user_service::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let healthy = ops::healthcheck(config.ops_addr).await;
        return Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    telemetry::init(config.log_format, &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let app = App::build(config, shutdown::signal()).await?;
    app.run_until_stopped().await;
    Ok(ExitCode::SUCCESS)
}
