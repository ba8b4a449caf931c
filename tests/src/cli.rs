//! The service binaries run as an operator runs them, for the tests about the binaries
//! themselves: `--help`, `--version`, exit codes, `healthcheck`, signals.

use std::{
    path::Path,
    process::{Output, Stdio},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use crate::{
    DEADLINE, ServiceEnv,
    process::{OsProcess, ScratchDir, free_port, log_tail},
};

/// Runs `program` (a binary's path, e.g. `env!("CARGO_BIN_EXE_user-service")`) with `args` and
/// nothing but `vars` in its environment, and waits for it to exit.
pub async fn run(program: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .await
        .unwrap_or_else(|error| panic!("{program} did not run: {error}"))
}

/// Output bytes as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `help` (a binary's `--help`) starts with `about`, offers `healthcheck`, and
/// lists every one of `settings` (variable, default) in a paragraph of its own with its
/// variable, its default (when it has one) and a line of meaning.
pub fn assert_help_lists(help: &str, about: &str, settings: impl IntoIterator<Item = (String, Option<String>)>) {
    assert!(help.starts_with(about), "the help starts with what the service is:\n{help}");
    assert!(help.contains("healthcheck"), "{help}");
    for (var, default) in settings {
        let entry = help.split("\n\n").find(|entry| entry.contains(&format!("[env: {var}")));
        let entry = entry.unwrap_or_else(|| panic!("{var} missing from:\n{help}"));
        if let Some(default) = default {
            let shown = if default.contains(' ') { format!("\"{default}\"") } else { default };
            assert!(entry.contains(&format!("[default: {shown}]")), "{var} without its default: {entry}");
        }
        assert!(entry.lines().nth(1).is_some_and(|meaning| !meaning.trim().is_empty()), "{var}: {entry}");
    }
}

/// A service binary running as an OS process whose `/readyz` answered 200.
///
/// Its log is a file in a scratch directory the value owns (removed when it drops); the
/// process may be moved out (e.g. to `wait_exit`) while the rest is kept.
pub struct RunningBinary {
    /// The process (its log file: [`OsProcess::log`]).
    pub process: OsProcess,
    /// The address its `/readyz` answered on (the variable [`start_ready`] was given).
    pub addr: String,
    _dir: ScratchDir,
}

/// Starts `program` with nothing in its environment but the variables `from_env` names (taken
/// from `env`), `extra` on top of them, and `addr_var` (`OPS_ADDR`, `HTTP_ADDR`) set to a free port; returns it
/// once `/readyz` on that port answers 200 (its database and broker reached).
pub async fn start_ready(
    program: &str,
    env: &ServiceEnv,
    from_env: &[&str],
    extra: &[(&str, &str)],
    addr_var: &str,
) -> RunningBinary {
    let name = Path::new(program).file_name().map_or_else(|| program.to_owned(), |name| name.to_string_lossy().into());
    let dir = ScratchDir::new("binary");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(program);
    command.env_clear().env(addr_var, &addr).stdin(Stdio::null());
    for var in from_env {
        command.env(var, env.lookup(var).unwrap_or_else(|| panic!("{var} is not set")));
    }
    command.envs(extra.iter().copied());
    let log = dir.path().join(format!("{name}.log"));
    let process =
        OsProcess::spawn(&name, command, &log).unwrap_or_else(|error| panic!("{name} did not start: {error}"));
    crate::eventually(DEADLINE, || async {
        let status = status_line(&addr, "/readyz").await?;
        if status.contains(" 200 ") { Ok(()) } else { Err(status) }
    })
    .await;
    RunningBinary { process, addr, _dir: dir }
}

impl RunningBinary {
    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// The process, the address its `/readyz` answered on, and the directory holding its log
    /// (removed when dropped: keep it while the log is read).
    pub fn into_parts(self) -> (OsProcess, String, ScratchDir) {
        (self.process, self.addr, self._dir)
    }
}

/// Sends SIG`signal` (`TERM`, `INT`) and asserts that the binary exits 0 within [`DEADLINE`]
/// and that its port is closed; the log's tail is shown otherwise.
pub async fn assert_stops_cleanly_on(binary: RunningBinary, signal: &str) {
    let RunningBinary { process, addr, _dir } = binary;
    process.signal(signal).await.unwrap_or_else(|error| panic!("SIG{signal} not sent: {error}"));
    let log = process.log().to_owned();
    let status = process
        .wait_exit(DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no exit within {DEADLINE:?} of SIG{signal}:\n{}", log_tail(&log)));
    assert!(status.success(), "SIG{signal} ended it with {status}:\n{}", log_tail(&log));
    assert!(status_line(&addr, "/healthz").await.is_err(), "{addr} still answers after SIG{signal}");
}

/// The status line of `GET {path}` on `addr` (HTTP/1.0, no client library needed).
async fn status_line(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(|error| error.to_string())?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}
