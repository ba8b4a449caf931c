//! A private RabbitMQ node for fault tests: a second `rabbitmq-server` with its own node name,
//! ports, Erlang cookie and data directory, started by the test as a child process, so a test
//! can stop, restart or kill its broker without disturbing the shared one other tests use.
//!
//! The node runs in the foreground with the Erlang shell reading a pipe only the test holds
//! (`RABBITMQ_ALLOW_INPUT`): the child's pid is the VM's own, and when the test process ends
//! in any way the pipe closes and the VM halts. It does not read the machine's
//! `rabbitmq-env.conf` or `rabbitmq.conf` and enables no plugins (no management API: queues
//! are inspected with `rabbitmqctl`), unless started with
//! [`LocalRabbit::start_with_management`]: then `rabbitmq_management` (installed with the
//! server, enabled for this node only) listens on a free port of 127.0.0.1 as well. The scripts
//! are found in `/usr/lib/rabbitmq/bin` (Debian's, which do not switch to the `rabbitmq` user)
//! or on `PATH`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use crate::process::{OsProcess, ScratchDir, free_port};

/// How long a (re)start may take until AMQP connections are accepted.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Where Debian keeps the scripts that run as the calling user.
const DEBIAN_SCRIPTS: &str = "/usr/lib/rabbitmq/bin";

/// The counts `rabbitmqctl list_queues` reports for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueCount {
    pub name: String,
    /// Messages waiting to be delivered.
    pub messages_ready: u64,
    /// Messages delivered to a consumer and not yet acknowledged.
    pub messages_unacknowledged: u64,
}

impl QueueCount {
    /// Ready and unacknowledged messages together.
    pub fn total(&self) -> u64 {
        self.messages_ready + self.messages_unacknowledged
    }
}

/// A RabbitMQ node of the test's own (see the module docs). Halted and its directory removed
/// when this value is dropped.
pub struct LocalRabbit {
    // Declared before `dir`: the node stops before its directory is removed.
    server: Option<OsProcess>,
    node: String,
    cookie: String,
    amqp_port: u16,
    dist_port: u16,
    /// The management API's port, when the plugin is enabled.
    management_port: Option<u16>,
    scripts: PathBuf,
    dir: ScratchDir,
}

impl LocalRabbit {
    /// Creates a node `fault_<random>@localhost` listening for AMQP on a free port of
    /// 127.0.0.1 (user guest/guest) and waits until it accepts connections.
    ///
    /// # Panics
    /// When RabbitMQ is not installed or does not start; the message carries its output.
    pub async fn start() -> LocalRabbit {
        LocalRabbit::start_node(false).await
    }

    /// Like [`LocalRabbit::start`], with the management plugin enabled on a free port of
    /// 127.0.0.1 ([`LocalRabbit::management_url`]); waits until its API answers as well.
    ///
    /// # Panics
    /// When RabbitMQ or its management plugin is not installed, or the node does not start.
    pub async fn start_with_management() -> LocalRabbit {
        LocalRabbit::start_node(true).await
    }

    async fn start_node(management: bool) -> LocalRabbit {
        let scripts = scripts_dir();
        let dir = ScratchDir::new("local_rabbit");
        let cookie = crate::unique("cookie");
        let amqp_port = free_port();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        };
        std::fs::create_dir_all(dir.path().join("home")).expect("create the node's home");
        write("home/.erlang.cookie", &cookie);
        set_owner_only(&dir.path().join("home/.erlang.cookie"));
        let management_port = management.then(free_port);
        let mut config = format!("listeners.tcp.local = 127.0.0.1:{amqp_port}\n");
        if let Some(port) = management_port {
            config.push_str(&format!("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"));
        }
        write("rabbitmq.conf", &config);
        write("rabbitmq-env.conf", "");
        write("enabled_plugins", if management { "[rabbitmq_management].\n" } else { "[].\n" });
        let mut rabbit = LocalRabbit {
            server: None,
            node: format!("{}@localhost", crate::unique("fault")),
            cookie,
            amqp_port,
            dist_port: free_port(),
            management_port,
            scripts,
            dir,
        };
        rabbit.start_again().await;
        rabbit
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `http://guest:guest@127.0.0.1:<port>`: the management API, when the node was started
    /// with it ([`LocalRabbit::start_with_management`]).
    pub fn management_url(&self) -> Option<String> {
        self.management_port.map(|port| format!("http://guest:guest@127.0.0.1:{port}"))
    }

    /// The Erlang node name, e.g. `fault_1a2b3c4d5e6f@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the node process is running (it may still be booting).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stops the node gracefully (`rabbitmqctl stop`: connections are closed, durable queues
    /// and persistent messages kept) and waits for it to exit. Does nothing when it is not
    /// running. (A `SIGTERM` would halt this node at once: it runs with the Erlang shell.)
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            if let Err(error) = self.rabbitmqctl(&["stop"]).await {
                eprintln!("local RabbitMQ: {error}; killing the node");
                server.kill().await;
            } else if server.wait_exit(STOP_TIMEOUT).await.is_none() {
                eprintln!("local RabbitMQ: no graceful stop within {STOP_TIMEOUT:?}; it was killed");
            }
        }
    }

    /// `kill -9` of the node's VM. Does nothing when it is not running.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Starts the node again with the same name, ports and data (stopping it first if needed)
    /// and waits until it accepts AMQP connections.
    ///
    /// # Panics
    /// When it does not within 60 s; the message carries its log.
    pub async fn start_again(&mut self) {
        self.spawn_again().await;
        self.wait_accepting().await;
    }

    /// Like [`LocalRabbit::start_again`] without the wait: the node boots (a few seconds)
    /// while the caller goes on; [`LocalRabbit::wait_accepting`] waits for it.
    ///
    /// # Panics
    /// When `rabbitmq-server` cannot be started.
    pub async fn spawn_again(&mut self) {
        self.stop().await;
        let mut command = Command::new(self.scripts.join("rabbitmq-server"));
        self.node_environment(&mut command);
        // The Erlang shell reads this pipe: when the test process is gone, it reads end of
        // file and halts the VM.
        command.env("RABBITMQ_ALLOW_INPUT", "1").stdin(Stdio::piped());
        let log = self.dir.path().join("rabbitmq.log");
        let server = OsProcess::spawn("rabbitmq-server", command, &log)
            .unwrap_or_else(|error| panic!("cannot start {}/rabbitmq-server: {error}", self.scripts.display()));
        self.server = Some(server);
    }

    /// Every queue of the default vhost with its message counts (`rabbitmqctl list_queues`).
    ///
    /// # Errors
    /// When `rabbitmqctl` cannot reach the node or prints something unexpected.
    pub async fn list_queues(&self) -> Result<Vec<QueueCount>, String> {
        let columns = ["list_queues", "name", "messages_ready", "messages_unacknowledged", "--formatter", "json"];
        let stdout = self.rabbitmqctl(&columns).await?;
        serde_json::from_slice(&stdout)
            .map_err(|error| format!("rabbitmqctl list_queues printed {:?}: {error}", String::from_utf8_lossy(&stdout)))
    }

    /// Runs `rabbitmqctl <args>` against this node; returns its standard output.
    async fn rabbitmqctl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let mut command = Command::new(self.scripts.join("rabbitmqctl"));
        self.node_environment(&mut command);
        command.args(["--erlang-cookie", &self.cookie, "-n", &self.node, "-q"]).args(args).stdin(Stdio::null());
        let output = command.output().await.map_err(|error| format!("cannot run rabbitmqctl: {error}"))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(format!(
                "rabbitmqctl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The end of the node's log (all incarnations), for failure messages.
    pub fn log_tail(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("rabbitmq.log"))
    }

    /// The variables that make the scripts address this node and nothing of the machine's.
    fn node_environment(&self, command: &mut Command) {
        let dir = self.dir.path();
        command
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            .env("RABBITMQ_LOGS", "-")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    /// Waits until the node accepts AMQP connections (and its management API answers, when
    /// enabled: the plugin starts after the AMQP listener).
    ///
    /// # Panics
    /// When it is not running, exits, or does not accept within 60 s; the message carries
    /// its log.
    pub async fn wait_accepting(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(connection) = Connection::connect(&self.url(), ConnectionProperties::default()).await {
                let _closed = connection.close(200, "ready".into()).await;
                if self.management_answers().await {
                    return;
                }
            }
            let exited = self.server.as_mut().map(OsProcess::exited);
            if !matches!(exited, Some(None)) || tokio::time::Instant::now() >= deadline {
                panic!(
                    "local RabbitMQ {} not accepting on port {} (management: {:?}; exit: {exited:?}):\n{}",
                    self.node,
                    self.amqp_port,
                    self.management_port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl LocalRabbit {
    /// Whether the management API answers `GET /api/overview` with 200 (true without the
    /// plugin). Plain HTTP/1.0 over TCP: the kit needs no HTTP client for this one request.
    async fn management_answers(&self) -> bool {
        let Some(port) = self.management_port else { return true };
        let ask = async {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
            // guest:guest in Base64.
            let request =
                "GET /api/overview HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n";
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0_u8; 12];
            stream.read_exact(&mut head).await?;
            Ok::<bool, std::io::Error>(head.ends_with(b" 200"))
        };
        matches!(tokio::time::timeout(Duration::from_secs(5), ask).await, Ok(Ok(true)))
    }
}

/// `/usr/lib/rabbitmq/bin` when it has the scripts, else the directory of `rabbitmq-server`
/// on `PATH`.
///
/// # Panics
/// When neither has them.
pub(crate) fn scripts_dir() -> PathBuf {
    let debian = Path::new(DEBIAN_SCRIPTS);
    if debian.join("rabbitmq-server").exists() {
        return debian.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("rabbitmq-server").is_file() && dir.join("rabbitmqctl").is_file())
        .unwrap_or_else(|| {
            panic!("no rabbitmq-server in {DEBIAN_SCRIPTS} nor on PATH: install the rabbitmq-server package")
        })
}

/// Erlang refuses a cookie file others can read.
pub(crate) fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
}
