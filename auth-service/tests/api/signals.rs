//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops
//! accepting, finishes, and exits 0 within the grace period.

use tests::ServiceEnv;

use crate::test_app::JWT_SECRET;

/// The variables the binary needs from the test's env (the rest keep their defaults).
const VARS: [&str; 4] = ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"];

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let extra = [("JWT_SECRET", JWT_SECRET), ("HTTP_ADDR", "127.0.0.1:0")];
    let binary = tests::cli::start_ready(env!("CARGO_BIN_EXE_auth-service"), &env, &VARS, &extra, "OPS_ADDR").await;
    tests::cli::assert_stops_cleanly_on(binary, signal).await;
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
