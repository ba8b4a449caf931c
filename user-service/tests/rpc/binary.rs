//! The built user-service binary as an OS process, for the tests about the binary itself (its
//! shutdown with a request in flight, its log lines): started with the test's names, database
//! and retry policy, its log in a file of its own.

use tests::{ServiceEnv, cli::RunningBinary};

/// The variables the binary takes from the test's env (the rest keep their defaults or come
/// from the test).
pub const FROM_ENV: [&str; 9] = [
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

/// Starts the built binary in `env` with `extra` on top; returns once it is ready (database
/// reached, queues consumed).
pub async fn start(env: &ServiceEnv, extra: &[(&str, &str)]) -> RunningBinary {
    tests::cli::start_ready(env!("CARGO_BIN_EXE_user-service"), env, &FROM_ENV, extra, "OPS_ADDR").await
}
