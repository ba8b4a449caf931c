//! `auth-service`: runs the service; `auth-service healthcheck` probes a running one
//! (exit code 0 when `/healthz` answers 200), for container health checks without curl.

use std::process::ExitCode;

use anyhow::Context;
use auth_service::{App, Config, config};
use shared::{ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let addr = config::healthcheck_addr()?;
        return Ok(if ops::healthcheck(addr).await { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(config.log_format, &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let app = App::build(config, shutdown::signal()).await.context("auth-service failed to start")?;
    app.stopped().await;
    Ok(ExitCode::SUCCESS)
}
