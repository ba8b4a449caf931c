//! The built user-service binary as an OS process, for the tests about the binary itself (its
//! shutdown with a request in flight, its log lines): started with the test's names, database
//! and retry policy, its log in a file of its own.

use std::path::PathBuf;

use tests::{
    ServiceEnv,
    process::{OsProcess, ScratchDir},
};

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

/// One running user-service process whose `/readyz` answered 200.
pub struct Binary {
    pub process: OsProcess,
    pub log: PathBuf,
    /// Where its ops port (`/metrics`) answers.
    pub ops: String,
    _dir: ScratchDir,
}

impl Binary {
    /// Starts the binary in `env` with `extra` on top; returns once it is ready (database
    /// reached, queues consumed).
    pub async fn start(env: &ServiceEnv, extra: &[(&str, &str)]) -> Binary {
        let program = env!("CARGO_BIN_EXE_user-service");
        let (process, ops, dir) =
            tests::cli::start_ready(program, env, &FROM_ENV, extra, "OPS_ADDR").await.into_parts();
        let log = process.log().to_owned();
        Binary { process, log, ops, _dir: dir }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
