//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops consuming
//! (a request sent afterwards waits in the queue for the next instance), closes its broker
//! connection and exits 0 within the grace period.

use std::time::Duration;

use serde_json::json;
use tests::{DEADLINE, ServiceEnv, process::OsProcess};
use tokio::process::Command;

/// The variables the binary needs from the test's env (the rest keep their defaults).
const VARS: [&str; 9] = [
    "AMQP_URL",
    "DATABASE_URL",
    "USER_QUEUE",
    "USER_EVENTS_QUEUE",
    "EVENTS_EXCHANGE",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_INITIAL_DELAY_MS",
    "RETRY_MULTIPLIER",
    "RETRY_MAX_DELAY_MS",
];

/// Starts the binary on `env` with its ops port on a free port; returns it once `/readyz` is 200.
async fn start(env: &ServiceEnv, dir: &tests::process::ScratchDir) -> (OsProcess, String) {
    let ops = format!("127.0.0.1:{}", tests::process::free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
    command.env_clear().env("OPS_ADDR", &ops).env("SHUTDOWN_GRACE_MS", "5000").stdin(std::process::Stdio::null());
    for name in VARS {
        command.env(name, env.lookup(name).unwrap_or_else(|| panic!("{name} is not set")));
    }
    let process = OsProcess::spawn("user-service", command, &dir.path().join("user-service.log")).unwrap();
    let readyz = format!("http://{ops}/readyz");
    let http = reqwest::Client::new();
    tests::eventually(DEADLINE, || async {
        match http.get(&readyz).send().await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(format!("readyz {}", response.status())),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    (process, ops)
}

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let dir = tests::process::ScratchDir::new("signals");
    let (process, ops) = start(&env, &dir).await;
    let queue = env.user_queue().to_owned();
    let probe = tests::BrokerProbe::connect(env.amqp_url()).await;
    process.signal(signal).await.unwrap();
    let log = process.log().to_owned();
    let status = process.wait_exit(DEADLINE).await;
    let status = status
        .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIG{signal}:\n{}", tests::process::log_tail(&log)));
    assert!(status.success(), "SIG{signal} ended it with {status}:\n{}", tests::process::log_tail(&log));
    // Its ops port is closed and nobody consumes its queue any more: a request sent now
    // waits there for the next instance.
    assert!(reqwest::get(format!("http://{ops}/healthz")).await.is_err(), "the ops port is still open");
    let request = json!({"pattern": {"cmd": "get_user"}, "data": {"id": uuid::Uuid::new_v4()}, "id": "after-stop"});
    probe.publish_raw("", &queue, request.to_string().as_bytes(), lapin::BasicProperties::default()).await;
    tests::eventually(Duration::from_secs(2), || async {
        match probe.message_count(&queue).await {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    probe.get(&queue).await;
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
