//! The built auth-service binary on a test's own database, queue and exchange, with its log in
//! a scratch file: for the tests about the binary itself (its log, its signals).

use std::{path::PathBuf, process::Stdio};

use reqwest::StatusCode;
use tests::{
    DEADLINE, ServiceEnv,
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
pub async fn start(env: &ServiceEnv, name: &str, settings: &[(&str, &str)]) -> Binary {
    let dir = ScratchDir::new(name);
    let log = dir.path().join("auth-service.log");
    let (http, ops) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-service"));
    command.env_clear().stdin(Stdio::null());
    for var in ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"] {
        command.env(var, env.lookup(var).unwrap());
    }
    command
        .env("JWT_SECRET", JWT_SECRET)
        .env("HTTP_ADDR", &http)
        .env("OPS_ADDR", &ops)
        .env("ARGON2_M_COST", "1024")
        .env("ARGON2_T_COST", "1");
    command.envs(settings.iter().copied());
    let process = OsProcess::spawn("auth-service", command, &log).unwrap();
    let client = reqwest::Client::new();
    tests::eventually(DEADLINE, || async {
        let response = client.get(format!("http://{ops}/readyz")).send().await.map_err(|e| e.to_string())?;
        if response.status() == StatusCode::OK { Ok(()) } else { Err(response.status().to_string()) }
    })
    .await;
    Binary { process, http, log, dir }
}
