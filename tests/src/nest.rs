//! Drivers for the NestJS interop project in `tests/nest`: a real NestJS 11 microservice
//! ([`NestServer`]) and a stock NestJS `ClientProxy` ([`nest_send`], [`nest_emit`]), both on
//! `Transport.RMQ`, so tests can prove that our services and NestJS apps understand each other
//! on the wire (see `shared/PROTOCOL.md`).
//!
//! Everything here needs Node.js 20 or later on `PATH`, nothing more: the first driver call of
//! a process installs `tests/nest/node_modules` from its lockfile if needed ([`ensure_ready`]).
//! Without Node.js the test fails with one line saying so; it never passes without running.

pub mod provision;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

pub use provision::{NODE_MISSING, ProvisionError};

/// How long a node script may take to start and connect before the test fails.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// The `tests/nest` folder (the npm project with the NestJS peers).
pub fn nest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nest")
}

/// Makes the interop project usable: checks that Node.js 20+ is on `PATH`, then runs
/// `npm ci` in `tests/nest` unless `node_modules` was already installed from the current
/// `package-lock.json`. Done once per process (under a file lock shared by all processes);
/// every driver calls it, so tests need not.
///
/// # Panics
/// With the one line [`NODE_MISSING`] when Node.js is missing or too old, or with npm's output
/// when `npm ci` fails.
pub async fn ensure_ready() {
    static READY: OnceCell<()> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(|| provision::provision(&nest_dir())).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("{error}"),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => panic!("test kit: provisioning tests/nest did not finish: {error}"),
            }
        })
        .await;
}

/// A `node <script>` command run from `tests/nest` (made ready first), killed when its handle
/// is dropped.
async fn node_command(script: &str) -> Command {
    ensure_ready().await;
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(nest_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Everything a child process wrote to stderr so far, for failure messages.
#[derive(Clone, Default)]
struct StderrLog(Arc<Mutex<String>>);

impl StderrLog {
    /// Collects `stream` in the background until it closes (the process exited).
    fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> (Self, JoinHandle<()>) {
        let log = Self::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.0.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        (log, task)
    }

    /// The last part of the log (enough to diagnose, short enough to read in a panic).
    fn tail(&self) -> String {
        const MAX: usize = 8 * 1024;
        let text = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut start = text.len().saturating_sub(MAX);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }
}

/// A real NestJS 11 microservice (`tests/nest/nest-server.js`) consuming `queue` over
/// `Transport.RMQ`, for testing our clients against NestJS. It answers `{cmd:"sum"}`,
/// `{cmd:"get_user"}` (404 `RpcException` unless the id is
/// `4fb7e234-2daa-5fed-bdf6-93f8f482da80`) and `{cmd:"boom"}` (plain error), and records
/// `user.created` events, read back with [`NestServer::next_event`]. Killed on drop.
pub struct NestServer {
    child: Child,
    // Held open: the server exits by itself when its stdin closes (e.g. if this process dies).
    _stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    stderr: StderrLog,
}

impl NestServer {
    /// Starts the server on `queue` (asserted `{durable: true}`), also bound to the topic
    /// `exchange` with NestJS `wildcards: true` when given, and waits until it consumes.
    /// Panics with the server's stderr if it does not get ready within 30 s.
    pub async fn start(amqp_url: &str, queue: &str, exchange: Option<&str>) -> NestServer {
        let mut command = node_command("nest-server.js").await;
        command.stdin(Stdio::piped()).env("AMQP_URL", amqp_url).env("QUEUE", queue);
        match exchange {
            Some(exchange) => command.env("EXCHANGE", exchange),
            None => command.env_remove("EXCHANGE"),
        };
        let mut child = command.spawn().expect("spawn `node nest-server.js`");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (stderr, stderr_task) = StderrLog::collect(child.stderr.take().expect("piped stderr"));

        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            match timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) if line.trim() == "READY" => break,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => {
                    let status = child.wait().await;
                    let _ = timeout(Duration::from_secs(5), stderr_task).await;
                    panic!("nest-server.js on queue {queue:?} exited before READY ({status:?}):\n{}", stderr.tail());
                }
                Err(_) => panic!(
                    "nest-server.js on queue {queue:?} not READY within {STARTUP_DEADLINE:?}:\n{}",
                    stderr.tail()
                ),
            }
        }

        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                // Anything else on stdout (there should be nothing) is ignored.
                let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                if event.get("event").is_some() && events_tx.send(event).is_err() {
                    break;
                }
            }
        });

        NestServer { child, _stdin: stdin, events, stderr }
    }

    /// The next event the server handled, as `{"event": "user.created", "data": <data>}`.
    /// Panics if none arrives within `deadline` or the server died.
    pub async fn next_event(&mut self, deadline: Duration) -> Value {
        match timeout(deadline, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("nest-server.js exited while waiting for an event:\n{}", self.stderr.tail()),
            Err(_) => {
                panic!("nest-server.js handled no event within {deadline:?}; its stderr:\n{}", self.stderr.tail())
            }
        }
    }

    /// What the server wrote to stderr so far (Nest's logs), for diagnostics.
    pub fn stderr(&self) -> String {
        self.stderr.tail()
    }
}

impl Drop for NestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where [`nest_emit`] publishes: a queue through the default exchange (plain NestJS client),
/// or a topic exchange with routing key = pattern (NestJS client with `exchange` +
/// `wildcards: true`).
#[derive(Debug, Clone, Copy)]
pub enum EmitTarget<'a> {
    /// Publish to this queue.
    Queue(&'a str),
    /// Publish to this topic exchange.
    Exchange(&'a str),
}

/// Sends one request with a stock NestJS client (`client.send(pattern, data)` awaited with
/// `lastValueFrom` + rxjs `timeout`) to `queue`. `Ok(response)` on success; `Err(err)` with the
/// error exactly as NestJS rejects it (the reply's `err`, string or object), or
/// `{"timeout": true}` when no completing reply came within `timeout`.
pub async fn nest_send(
    amqp_url: &str,
    queue: &str,
    pattern: Value,
    data: Value,
    timeout: Duration,
) -> Result<Value, Value> {
    let command = json!({
        "op": "send",
        "queue": queue,
        "pattern": pattern,
        "data": data,
        "timeoutMs": duration_ms(timeout),
    });
    into_result(run_client(amqp_url, &command, timeout).await)
}

/// Like [`nest_send`], but `count` concurrent sends from one NestJS client; results in call
/// order.
pub async fn nest_send_many(
    amqp_url: &str,
    queue: &str,
    pattern: Value,
    data: Value,
    timeout: Duration,
    count: usize,
) -> Vec<Result<Value, Value>> {
    let command = json!({
        "op": "send",
        "queue": queue,
        "pattern": pattern,
        "data": data,
        "timeoutMs": duration_ms(timeout),
        "count": count,
    });
    let outcome = run_client(amqp_url, &command, timeout).await;
    match into_result(outcome) {
        Ok(Value::Array(results)) => results.into_iter().map(into_result).collect(),
        other => panic!("nest-client.js gave no result list for {command}: {other:?}"),
    }
}

/// Emits one event with a stock NestJS client (`client.emit(pattern, data)`) and returns once
/// the publish is confirmed. Panics if the client fails.
pub async fn nest_emit(amqp_url: &str, target: EmitTarget<'_>, pattern: &str, data: Value) {
    let mut command = json!({ "op": "emit", "pattern": pattern, "data": data });
    match target {
        EmitTarget::Queue(queue) => command["queue"] = json!(queue),
        EmitTarget::Exchange(exchange) => command["exchange"] = json!(exchange),
    }
    let outcome = run_client(amqp_url, &command, Duration::ZERO).await;
    if let Err(err) = into_result(outcome) {
        panic!("NestJS emit {command} failed: {err}");
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Maps `{"ok":true,"response":R}` to `Ok(R)` and `{"ok":false,"error":E}` to `Err(E)`.
fn into_result(outcome: Value) -> Result<Value, Value> {
    if outcome.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(outcome.get("response").cloned().unwrap_or(Value::Null))
    } else {
        Err(outcome.get("error").cloned().unwrap_or(Value::Null))
    }
}

/// Runs `node nest-client.js <command>` and returns the JSON line it prints. `call_timeout` is
/// the command's own timeout; the process gets that plus the startup allowance.
async fn run_client(amqp_url: &str, command: &Value, call_timeout: Duration) -> Value {
    let child = node_command("nest-client.js")
        .await
        .arg(command.to_string())
        .env("AMQP_URL", amqp_url)
        .spawn()
        .expect("spawn `node nest-client.js`");
    let deadline = STARTUP_DEADLINE + call_timeout;
    let output = match timeout(deadline, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for nest-client.js"),
        Err(_) => panic!("nest-client.js did not finish {command} within {deadline:?}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result = stdout.lines().rev().find_map(|line| serde_json::from_str::<Value>(line.trim()).ok());
    match result {
        Some(result) if output.status.success() => result,
        _ => panic!("nest-client.js failed for {command} ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status),
    }
}
