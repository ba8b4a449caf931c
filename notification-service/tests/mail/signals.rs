//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops
//! consuming, closes its links and exits 0 within the grace period.

use std::process::Stdio;

use tests::{DEADLINE, ServiceEnv, process::OsProcess, smtp::SmtpSink};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

/// The variables the binary needs from the test's env (the rest keep their defaults).
const VARS: [&str; 8] = [
    "AMQP_URL",
    "DATABASE_URL",
    "NOTIFICATION_QUEUE",
    "EVENTS_EXCHANGE",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_INITIAL_DELAY_MS",
    "RETRY_MULTIPLIER",
    "RETRY_MAX_DELAY_MS",
];

/// The status line of `GET {path}` on `addr` (HTTP/1.0, no client library needed).
async fn status_line(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(|error| error.to_string())?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let smtp = SmtpSink::start().await;
    let dir = tests::process::ScratchDir::new("signals");
    let ops = format!("127.0.0.1:{}", tests::process::free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_notification-service"));
    command.env_clear().env("OPS_ADDR", &ops).env("SMTP_URL", smtp.url()).stdin(Stdio::null());
    for name in VARS {
        command.env(name, env.lookup(name).unwrap_or_else(|| panic!("{name} is not set")));
    }
    let log = dir.path().join("notification-service.log");
    let process = OsProcess::spawn("notification-service", command, &log).unwrap();
    tests::eventually(DEADLINE, || async {
        let status = status_line(&ops, "/readyz").await?;
        if status.contains(" 200 ") { Ok(()) } else { Err(status) }
    })
    .await;

    process.signal(signal).await.unwrap();
    let status = process
        .wait_exit(DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIG{signal}:\n{}", tests::process::log_tail(&log)));
    assert!(status.success(), "SIG{signal} ended it with {status}:\n{}", tests::process::log_tail(&log));
    assert!(status_line(&ops, "/healthz").await.is_err(), "the ops port is still open");
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
