//! The built auth-service binary on a test's own database, queue and exchange, with its log in
//! a scratch file: for the tests about the binary itself (its log, its signals).

use std::path::PathBuf;

use tests::{
    ServiceEnv,
    process::{OsProcess, ScratchDir, free_port},
};

use crate::test_app::JWT_SECRET;

pub struct Binary {
    pub process: OsProcess,
    /// The public port's address (`host:port`).
    pub http: String,
    /// The whole output of the process (in `dir`, removed when it drops).
    pub log: PathBuf,
    pub dir: ScratchDir,
}

/// Starts the binary with `env`'s broker and database, fast password hashing and the test key,
/// plus `settings` (which may override those), and waits until its `/readyz` answers 200.
pub async fn start(env: &ServiceEnv, settings: &[(&str, &str)]) -> Binary {
    let http = format!("127.0.0.1:{}", free_port());
    let mut all = vec![
        ("JWT_SECRET", JWT_SECRET),
        ("HTTP_ADDR", http.as_str()),
        ("ARGON2_M_COST", "1024"),
        ("ARGON2_T_COST", "1"),
    ];
    all.extend_from_slice(settings);
    let from_env = ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"];
    let program = env!("CARGO_BIN_EXE_auth-service");
    let (process, _ops, dir) = tests::cli::start_ready(program, env, &from_env, &all, "OPS_ADDR").await.into_parts();
    let log = process.log().to_owned();
    Binary { process, http, log, dir }
}
