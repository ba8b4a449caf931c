//! A private Postgres cluster for fault tests: `initdb` on a scratch directory, the
//! `postgres` server as a child process on a free port, restartable and killable, so a test
//! can take its database away without disturbing the shared server other tests use.
//!
//! Postgres refuses to run as root; when the test runs as root, `initdb` and `postgres` run as
//! the `postgres` user (through `setpriv`, which execs, so the child's pid is the postmaster's).
//! The binaries are found on `PATH`, else in the newest `/usr/lib/postgresql/<version>/bin`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use tokio::process::Command;

use crate::process::{OsProcess, ScratchDir, free_port, running_as_root};

/// How long a start may take until the server accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The user that owns the cluster when the test runs as root.
const OS_USER: &str = "postgres";

/// A Postgres cluster of the test's own (see the module docs). The server is killed and the
/// data directory removed when this value is dropped.
pub struct LocalPostgres {
    // Declared before `dir`: the server dies before its directory is removed.
    server: Option<OsProcess>,
    bin: PathBuf,
    port: u16,
    dir: ScratchDir,
}

impl LocalPostgres {
    /// Creates a cluster (superuser `postgres`, trust authentication, no fsync: this is test
    /// data) and starts it on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When Postgres is not installed or does not start; the message carries its output.
    pub async fn start() -> LocalPostgres {
        let bin = bin_dir();
        let dir = ScratchDir::new("local_postgres");
        if running_as_root() {
            let owner = format!("{OS_USER}:{OS_USER}");
            run(Command::new("chown").arg(&owner).arg(dir.path()), "chown the scratch directory").await;
        }
        let mut initdb = as_os_user(&bin.join("initdb"));
        initdb.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        initdb.arg("--locale=C");
        run(&mut initdb, "initdb").await;
        let mut postgres = LocalPostgres { server: None, bin, port: free_port(), dir };
        postgres.start_again().await;
        postgres
    }

    /// `postgres://postgres@127.0.0.1:<port>` (no database name).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url())
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (it may still be starting).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Panics
    /// When the server is down or refuses.
    pub async fn create_database(&self, name: &str) -> String {
        let mut connection = PgConnection::connect(&self.database_url("postgres"))
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the local Postgres: {error}"));
        let statement = format!("CREATE DATABASE \"{name}\"");
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let _closed = connection.close().await;
        self.database_url(name)
    }

    /// A fast shutdown (`pg_ctl stop -m fast`: sessions are ended, then a checkpoint), as an
    /// operator's restart does; returns once the server has exited. Does nothing when it is
    /// not running.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            if let Err(error) = server.signal("INT").await {
                eprintln!("local Postgres: cannot signal the server ({error}); killing it");
            }
            if server.wait_exit(STOP_TIMEOUT).await.is_none() {
                eprintln!("local Postgres: no fast shutdown within {STOP_TIMEOUT:?}; it was killed");
            }
        }
    }

    /// `kill -9` of the postmaster (its backends notice and exit; the next start recovers
    /// from the WAL). Does nothing when it is not running.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Starts the server again on the same port and data (stopping it first if needed) and
    /// waits until it accepts connections.
    ///
    /// # Panics
    /// When it does not accept connections within 30 s; the message carries its log.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let mut command = as_os_user(&self.bin.join("postgres"));
        command.arg("-D").arg(self.dir.path().join("data"));
        command.args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"]);
        command.arg(self.dir.path());
        // Test data: durability against OS crashes is not needed, speed on a busy CI box is.
        command.args(["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=300"]);
        let log = self.dir.path().join("postgres.log");
        let server = OsProcess::spawn("postgres", command, &log)
            .unwrap_or_else(|error| panic!("cannot start postgres from {}: {error}", self.bin.display()));
        self.server = Some(server);
        self.wait_accepting().await;
    }

    /// The end of the server's log (all incarnations), for failure messages.
    pub fn log_tail(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("postgres.log"))
    }

    async fn wait_accepting(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let url = self.database_url("postgres");
        loop {
            if let Ok(connection) = PgConnection::connect(&url).await {
                let _closed = connection.close().await;
                return;
            }
            let exited = self.server.as_mut().and_then(OsProcess::exited);
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                panic!("local Postgres on port {} not accepting ({exited:?}):\n{}", self.port, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A command running `program` as [`OS_USER`] when the test is root, else as the test's user.
fn as_os_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid", OS_USER, "--regid", OS_USER, "--init-groups"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs a setup command to completion.
///
/// # Panics
/// When it cannot be run or fails; the message carries its output.
async fn run(command: &mut Command, what: &str) {
    let output = command.output().await.unwrap_or_else(|error| panic!("local Postgres: cannot run {what}: {error}"));
    assert!(
        output.status.success(),
        "local Postgres: {what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where `initdb` and `postgres` are: the directory of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`).
///
/// # Panics
/// When neither has them.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    let debian = || {
        let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        versions
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .map(|version| PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")))
            .filter(|dir| dir.join("initdb").is_file())
    };
    on_path.or_else(debian).unwrap_or_else(|| {
        panic!("local Postgres: no initdb/postgres on PATH nor in /usr/lib/postgresql/*/bin (install PostgreSQL)")
    })
}
