//! A local RabbitMQ cluster for failover tests and benches: N nodes of the installed
//! `rabbitmq-server`, each with its own node name, AMQP and distribution ports, data and log
//! directories and an empty plugins file, joined into one cluster with a cookie of their own,
//! and a fresh virtual host whose default queue type is quorum (so that argument-less
//! declarations, ours and NestJS's, create replicated quorum queues).
//!
//! Nodes run in the foreground as children of the test, their Erlang shell reading a pipe only
//! the test holds (`RABBITMQ_ALLOW_INPUT`): whenever the test process ends, however it ends,
//! the pipe closes and every node halts, so no node outlives a test run. [`LocalCluster`]'s
//! `Drop` kills them at once. A node can be stopped gracefully (as an operator would) and
//! started again with the same identity and data; it rejoins the cluster by itself.
//!
//! The machine's shared RabbitMQ is never touched: the nodes read neither its configuration
//! nor its cookie (`HOME` points into the cluster's directory).

use std::{
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use lapin::{Connection, ConnectionProperties};

use crate::local_rabbit::{scripts_dir, set_owner_only};

/// How long a node may take to accept AMQP connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One queue as `rabbitmqctl list_queues` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterQueue {
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    pub kind: String,
    /// The node leading a quorum queue (the hosting node of a classic one).
    pub leader: String,
    pub messages: u64,
}

/// One node: its identity and, while it runs, its process.
struct Node {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    process: Mutex<Option<(Child, ChildStdin)>>,
}

/// A running local cluster (see the module docs).
pub struct LocalCluster {
    nodes: Vec<Node>,
    home: PathBuf,
    root: PathBuf,
    scripts: PathBuf,
    vhost: String,
}

impl LocalCluster {
    /// Starts `size` nodes, clusters them and creates the quorum virtual host.
    ///
    /// # Panics
    /// When RabbitMQ is not installed or a node does not start or join; the message carries
    /// the node's log.
    pub async fn start(size: usize) -> LocalCluster {
        let scripts = scripts_dir();
        remove_abandoned_clusters();
        let id = crate::unique("cluster");
        let root = std::env::temp_dir().join(&id);
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("create the cluster's home");
        std::fs::write(root.join(OWNER_FILE), std::process::id().to_string()).expect("write the owner file");
        let cookie_file = home.join(".erlang.cookie");
        std::fs::write(&cookie_file, crate::unique("cookie")).expect("write the cookie");
        set_owner_only(&cookie_file);
        // Every port is picked while all the others are still held, so no two are the same.
        let ports = free_ports(2 * size);
        let nodes = (0..size)
            .map(|index| {
                let dir = root.join(format!("node{}", index + 1));
                std::fs::create_dir_all(&dir).expect("create a node's directory");
                let amqp_port = ports[2 * index];
                let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write node files");
                write("rabbitmq.conf", &format!("listeners.tcp.local = 127.0.0.1:{amqp_port}\n"));
                write("rabbitmq-env.conf", "");
                write("enabled_plugins", "[].\n");
                Node {
                    name: format!("{id}_{}@localhost", index + 1),
                    amqp_port,
                    dist_port: ports[2 * index + 1],
                    dir,
                    process: Mutex::new(None),
                }
            })
            .collect();
        let cluster = LocalCluster { nodes, home, root, scripts, vhost: crate::unique("quorum") };
        for index in 0..size {
            cluster.spawn(index);
        }
        for index in 0..size {
            cluster.wait_accepting(index).await;
        }
        let first = cluster.nodes[0].name.clone();
        for index in 1..size {
            cluster.ctl_ok(index, &["stop_app"]).await;
            cluster.ctl_ok(index, &["join_cluster", &first]).await;
            cluster.ctl_ok(index, &["start_app"]).await;
        }
        cluster.ctl_ok(0, &["add_vhost", &cluster.vhost, "--default-queue-type", "quorum"]).await;
        cluster.ctl_ok(0, &["set_permissions", "-p", &cluster.vhost, "guest", ".*", ".*", ".*"]).await;
        for index in 0..size {
            cluster.wait_accepting(index).await;
        }
        cluster
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The quorum virtual host every URL points at.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/<vhost>` of node `index` (0-based).
    pub fn url(&self, index: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{}", self.nodes[index].amqp_port, self.vhost)
    }

    /// Every node's URL, comma-separated, in node order: what `AMQP_URL` takes.
    pub fn urls(&self) -> String {
        (0..self.nodes.len()).map(|index| self.url(index)).collect::<Vec<_>>().join(",")
    }

    /// The same URLs as a list (what a NestJS client's `urls` option takes).
    pub fn url_list(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|index| self.url(index)).collect()
    }

    /// `127.0.0.1:<port>` of node `index`, as the services name the node they use.
    pub fn address(&self, index: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[index].amqp_port)
    }

    /// The Erlang name of node `index`.
    pub fn node_name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// Whether node `index` has a running process.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].process.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Stops node `index` gracefully (`rabbitmqctl stop`: clients are disconnected, queues
    /// elect new leaders on the other nodes) and waits until its process has exited.
    pub async fn stop_node(&self, index: usize) {
        let Some((mut child, stdin)) = self.nodes[index].process.lock().unwrap_or_else(PoisonError::into_inner).take()
        else {
            return;
        };
        if let Err(error) = self.ctl(index, &["stop"]).await {
            eprintln!("cluster: graceful stop of {} failed ({error}); killing it", self.nodes[index].name);
            let _ = child.kill();
        }
        drop(stdin);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = child.kill();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `index` again (same name, ports and data) and waits until it accepts AMQP
    /// connections; it rejoins the cluster on its own.
    pub async fn start_node(&self, index: usize) {
        if !self.is_running(index) {
            self.spawn(index);
        }
        self.wait_accepting(index).await;
    }

    /// Every queue of the cluster's virtual host, asked of a running node.
    ///
    /// # Panics
    /// When no node answers.
    pub async fn list_queues(&self) -> Vec<ClusterQueue> {
        let args = ["list_queues", "-p", &self.vhost, "name", "type", "leader", "messages", "--no-table-headers"];
        let output = self.ctl_any(&args).await;
        output
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let [name, kind, leader, messages] = fields[..] else { return None };
                Some(ClusterQueue {
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    leader: leader.to_owned(),
                    messages: messages.trim().parse().unwrap_or(0),
                })
            })
            .collect()
    }

    /// The client connections of the virtual host: (connection name, node), asked of a
    /// running node.
    pub async fn connections(&self) -> Vec<(String, String)> {
        let output =
            self.ctl_any(&["list_connections", "vhost", "pid", "client_properties", "--no-table-headers"]).await;
        output
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                let (vhost, pid, properties) = (fields.next()?, fields.next()?, fields.next()?);
                if vhost != self.vhost {
                    return None;
                }
                // A pid reads `<node@host.1.2.3>`.
                let node = self.nodes.iter().find(|node| pid.contains(&format!("<{}.", node.name)))?;
                let name = properties
                    .split("{\"connection_name\",\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default();
                Some((name.to_owned(), node.name.clone()))
            })
            .collect()
    }

    /// Runs `rabbitmqctl` against node `index`; returns its output or why it failed.
    pub async fn ctl(&self, index: usize, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(self.scripts.join("rabbitmqctl"));
        command.env("HOME", &self.home).env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command.args(["-q", "-n", &self.nodes[index].name]).args(args).stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("cannot run rabbitmqctl: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The end of node `index`'s log, for failure messages.
    pub fn log_tail(&self, index: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[index].dir.join("console.log")).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        text.get(start..).unwrap_or(&text).to_owned()
    }

    async fn ctl_ok(&self, index: usize, args: &[&str]) {
        if let Err(error) = self.ctl(index, args).await {
            panic!("{error}\n{}", self.log_tail(index));
        }
    }

    async fn ctl_any(&self, args: &[&str]) -> String {
        let mut errors = Vec::new();
        for index in (0..self.nodes.len()).filter(|index| self.is_running(*index)) {
            match self.ctl(index, args).await {
                Ok(output) => return output,
                Err(error) => errors.push(error),
            }
        }
        panic!("no node answered: {errors:?}");
    }

    fn spawn(&self, index: usize) {
        let node = &self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("console.log"))
            .expect("open the node's console log");
        let mut command = Command::new(self.scripts.join("rabbitmq-server"));
        command
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_CONF_ENV_FILE", node.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", node.dir.join("enabled_plugins"))
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_PID_FILE", node.dir.join("rabbitmq.pid"))
            .env("RABBITMQ_LOGS", "-")
            .env("ERL_CRASH_DUMP", node.dir.join("erl_crash.dump"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            // The Erlang shell reads this pipe: when the test process is gone it reads end of
            // file and halts the VM.
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot start rabbitmq-server: {error}"));
        let stdin = child.stdin.take().expect("the node's stdin pipe");
        *node.process.lock().unwrap_or_else(PoisonError::into_inner) = Some((child, stdin));
    }

    async fn wait_accepting(&self, index: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.nodes[index].amqp_port);
        loop {
            if let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await {
                let _closed = connection.close(200, "ready".into()).await;
                return;
            }
            let exited = self.nodes[index]
                .process
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .and_then(|(child, _)| child.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "cluster node {} not accepting on port {} ({exited:?}):\n{}",
                self.nodes[index].name,
                self.nodes[index].amqp_port,
                self.log_tail(index)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some((mut child, stdin)) = node.process.lock().unwrap_or_else(PoisonError::into_inner).take() {
                drop(stdin);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Holds the pid of the test process that owns a cluster's directory.
const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of clusters whose test process is gone: a cluster kept in a
/// `static` is never dropped, its nodes halt with the process but its files stay.
fn remove_abandoned_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let owner = std::fs::read_to_string(path.join(OWNER_FILE)).ok();
        let gone = owner.is_some_and(|pid| !Path::new("/proc").join(pid.trim()).exists());
        if gone && path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("cluster_")) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// `count` distinct ports of 127.0.0.1 nobody listens on right now.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|listener| listener.local_addr().expect("a bound address").port()).collect()
}
