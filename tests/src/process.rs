//! Real OS processes for fault tests: a server or service started as a child of the test,
//! its output captured to a file, killable with a real `SIGKILL` and signalled like an
//! operator would, and never outliving the test process.
//!
//! Each [`OsProcess`] is one incarnation of a program; a restart is a new `OsProcess` with the
//! same command. Next to each one runs a tiny watcher shell that waits on a pipe only the test
//! holds: when the test process ends in any way (panic, `SIGKILL`, CI timeout) the kernel
//! closes the pipe and the watcher sends `SIGKILL` to the child. On an orderly end the watcher
//! is retired first, so it can never hit a reused pid.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// How much of the end of a log [`OsProcess::log_tail`] reads.
const TAIL_BYTES: u64 = 8 * 1024;
/// How long a child may take to die after `SIGKILL` (only a kernel problem would exceed it).
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child process (see the module docs). Killed with `SIGKILL` when dropped.
pub struct OsProcess {
    name: String,
    pid: u32,
    child: Child,
    watcher: Option<std::process::Child>,
    log: PathBuf,
}

impl OsProcess {
    /// Spawns `command` with stdout and stderr appended to `log` (created if missing, so the
    /// incarnations of one service share a file); stdin is whatever `command` says (set it to
    /// null or a pipe: inheriting the test's is rarely wanted). `name` is for messages only.
    ///
    /// # Errors
    /// When the log cannot be opened or the program cannot be started.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> io::Result<OsProcess> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        command.stdout(out).stderr(err).kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child.id().ok_or_else(|| io::Error::other(format!("{name} exited before it had a pid")))?;
        let watcher = spawn_watcher(pid)
            .inspect_err(|error| {
                eprintln!("process: no watcher for {name} (pid {pid}): {error}; it may outlive a killed test")
            })
            .ok();
        Ok(OsProcess { name: name.to_owned(), pid, child, watcher, log: log.to_owned() })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file its output goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `kill -9`: the process gets no chance to clean up. Returns once it is dead and reaped.
    ///
    /// # Panics
    /// When it is still not reaped 10 s after the signal.
    pub async fn kill(mut self) {
        self.retire_watcher();
        let _already_dead = self.child.start_kill();
        let reaped = tokio::time::timeout(REAP_TIMEOUT, self.child.wait()).await;
        assert!(reaped.is_ok(), "{} (pid {}) not reaped {REAP_TIMEOUT:?} after SIGKILL", self.name, self.pid);
    }

    /// Sends `signal` (a name `kill -s` understands: `TERM`, `INT`, …) without waiting.
    ///
    /// # Errors
    /// When `kill` cannot be run or reports a failure.
    pub async fn signal(&self, signal: &str) -> io::Result<()> {
        let status = Command::new("kill").args(["-s", signal, &self.pid.to_string()]).status().await?;
        if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill -s {signal} failed: {status}"))) }
    }

    /// Waits up to `deadline` for the process to exit by itself (after a signal, say) and
    /// returns how it ended; on timeout it is killed and `None` is returned.
    pub async fn wait_exit(mut self, deadline: Duration) -> Option<ExitStatus> {
        let exited = tokio::time::timeout(deadline, self.child.wait()).await;
        self.retire_watcher();
        match exited {
            Ok(status) => status.ok(),
            Err(_) => {
                self.kill().await;
                None
            }
        }
    }

    /// `Some` with the exit status when the process has already ended, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its log (about 8 KiB), for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Kills the watcher: from here on the child's end is the caller's business.
    fn retire_watcher(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            let _already_dead = watcher.kill();
            let _reaped = watcher.wait();
        }
    }
}

impl Drop for OsProcess {
    fn drop(&mut self) {
        self.retire_watcher();
        // kill_on_drop sends SIGKILL; Tokio reaps the child in the background.
    }
}

/// The last ~8 KiB of the file at `path`, from a line start; a note when it cannot be read.
pub fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let from_line = if length > TAIL_BYTES { text.find('\n').map_or(0, |at| at + 1) } else { 0 };
        Ok(text[from_line..].to_owned())
    };
    read().unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()))
}

/// A shell that sends `SIGKILL` to `pid` when its stdin, a pipe held only by this process,
/// reaches end of file: when the test process is gone.
fn spawn_watcher(pid: u32) -> io::Result<std::process::Child> {
    let script = "trap '' INT TERM HUP; read _ignored; kill -9 \"$1\" 2>/dev/null";
    std::process::Command::new("sh")
        .args(["-c", script, "test-kit-process-watcher", &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it for a listener that is
/// closed again), for servers that must be told their port before they start.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Whether this process runs as root (servers like Postgres then need another user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A directory of its own under the system temp dir, named `<prefix>_<random>`, removed when
/// dropped unless [`ScratchDir::keep`] was called or `KEEP_SCRATCH` is set.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// Creates it.
    ///
    /// # Panics
    /// When it cannot be created.
    pub fn new(prefix: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(crate::unique(prefix));
        std::fs::create_dir_all(&path).unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        ScratchDir { path, keep: std::env::var_os("KEEP_SCRATCH").is_some() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps it after the drop (for a failure's logs); returns where it is.
    pub fn keep(&mut self) -> &Path {
        self.keep = true;
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _gone_or_busy = std::fs::remove_dir_all(&self.path);
        }
    }
}
