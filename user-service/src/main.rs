//! The `user-service` binary: `user-service` runs the service, `user-service healthcheck`
//! asks a running one for `/healthz` (exit code 0 or 1), for container health checks.

use std::{net::SocketAddr, process::ExitCode};

use shared::{ops, shutdown, telemetry};
use user_service::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let healthy = ops::healthcheck(local(config.ops_addr)).await;
        return Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    telemetry::init(config.log_format);
    let app = App::build(config, shutdown::signal()).await?;
    app.run_until_stopped().await;
    Ok(ExitCode::SUCCESS)
}

/// The address to probe a port bound on `addr`: a wildcard bind is reached over loopback.
fn local(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}
