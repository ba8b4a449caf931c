//! The built user-service binary as an OS process, for the tests about the binary itself (its
//! shutdown with a request in flight, its log lines): started with the test's names, database
//! and retry policy, its log in a file of its own.

use std::{path::PathBuf, process::Stdio};

use tests::{
    DEADLINE, ServiceEnv,
    process::{OsProcess, ScratchDir, free_port},
};

/// The variables the binary takes from the test's env (the rest keep their defaults or come
/// from the test).
const FROM_ENV: [&str; 9] = [
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
    _dir: ScratchDir,
}

impl Binary {
    /// Starts the binary in `env` with `extra` on top; returns once it is ready (database
    /// reached, queues consumed).
    pub async fn start(env: &ServiceEnv, extra: &[(&str, &str)]) -> Binary {
        let dir = ScratchDir::new("user-binary");
        let log = dir.path().join("user-service.log");
        let ops = format!("127.0.0.1:{}", free_port());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_user-service"));
        command.env_clear().stdin(Stdio::null());
        for var in FROM_ENV {
            command.env(var, env.lookup(var).unwrap_or_else(|| panic!("{var} is not set")));
        }
        command.env("OPS_ADDR", &ops).envs(extra.iter().copied());
        let process = OsProcess::spawn("user-service", command, &log).unwrap();
        let binary = Binary { process, log, _dir: dir };
        let readyz = format!("http://{ops}/readyz");
        tests::eventually(DEADLINE, || async {
            match reqwest::get(&readyz).await.map(|response| response.status().as_u16()) {
                Ok(200) => Ok(()),
                other => Err(format!("{other:?}\n{}", binary.process.log_tail())),
            }
        })
        .await;
        binary
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
