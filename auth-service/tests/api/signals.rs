//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops
//! accepting, finishes, and exits 0 within the grace period.

use std::process::Stdio;

use tests::{DEADLINE, ServiceEnv, process::OsProcess};
use tokio::process::Command;

use crate::test_app::JWT_SECRET;

/// The variables the binary needs from the test's env (the rest keep their defaults).
const VARS: [&str; 4] = ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"];

/// Starts the binary on `env` with its HTTP port on a free port; returns it once `/readyz`
/// answers 200 (Postgres and the broker reached).
async fn start(env: &ServiceEnv, dir: &tests::process::ScratchDir) -> (OsProcess, String) {
    let addr = format!("127.0.0.1:{}", tests::process::free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_auth-service"));
    command.env_clear().env("HTTP_ADDR", &addr).env("JWT_SECRET", JWT_SECRET).stdin(Stdio::null());
    for name in VARS {
        command.env(name, env.lookup(name).unwrap_or_else(|| panic!("{name} is not set")));
    }
    let process = OsProcess::spawn("auth-service", command, &dir.path().join("auth-service.log")).unwrap();
    let readyz = format!("http://{addr}/readyz");
    let http = reqwest::Client::new();
    tests::eventually(DEADLINE, || async {
        match http.get(&readyz).send().await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(format!("readyz {}", response.status())),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    (process, addr)
}

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let dir = tests::process::ScratchDir::new("signals");
    let (process, addr) = start(&env, &dir).await;
    process.signal(signal).await.unwrap();
    let log = process.log().to_owned();
    let status = process
        .wait_exit(DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIG{signal}:\n{}", tests::process::log_tail(&log)));
    assert!(status.success(), "SIG{signal} ended it with {status}:\n{}", tests::process::log_tail(&log));
    assert!(reqwest::get(format!("http://{addr}/healthz")).await.is_err(), "the HTTP port is still open");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_cleanly_with_exit_code_0() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_binary_cleanly_with_exit_code_0() {
    stops_cleanly_on("INT").await;
}
