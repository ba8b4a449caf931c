//! Connecting to the broker, and connecting again after the link breaks.
//!
//! Client and server each own one connection and a supervisor loop around it: connect with
//! exponential backoff and jitter, set up channels and topology, run until the link breaks,
//! then start over. Nothing above the supervisor needs a restart when the broker goes away.
//!
//! On a cluster the configuration lists every node ([`BrokerUrls`]). A supervisor starts at a
//! random node of the list (so that services spread over the cluster), tries the others in
//! turn when one refuses, and after losing a link starts with the node after the lost one:
//! losing the connected node means a connection to the next within one round, without
//! waiting out a backoff. Only when every node refused does it back off. The node in use is
//! logged and shown by `/readyz` ([`nodes_in_use`]); credentials never are.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::{
    broker_urls::{BrokerUrl, BrokerUrls, redact},
    topology::QueueType,
};

/// How long setting up channels and topology on a fresh connection may take. A request sent
/// just as a link breaks can stay unanswered, so setup never waits unbounded.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one node may take to accept a connection before the next one is tried: a node
/// that is unreachable (rather than refusing) must not hold up the failover.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds a setup step by [`SETUP_TIMEOUT`]; a step that hangs counts as a lost link.
pub(crate) async fn bounded<T>(setup: impl Future<Output = Result<T, lapin::Error>>) -> Result<T, lapin::Error> {
    tokio::time::timeout(SETUP_TIMEOUT, setup).await.unwrap_or_else(|_| {
        Err(lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "broker setup timed out")))
    })
}

/// Delays between reconnection rounds: exponential from `initial` up to `max`, with jitter
/// so that many services restarted together do not reconnect in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based), jittered into `[d/2, d]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self.initial.saturating_mul(2u32.saturating_pow(attempt.min(20)));
        let capped = exponential.min(self.max);
        capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct BrokerConfig {
    /// One URL per node, `amqp://user:pass@host:port/vhost`; `Debug` shows the nodes only.
    pub urls: BrokerUrls,
    /// Shown by the broker (`rabbitmqctl list_connections client_properties`).
    pub connection_name: String,
    pub reconnect: Backoff,
    /// Start at a random node of the list (the default: services spread over a cluster), or
    /// always at the first (the others are then standbys).
    pub shuffle: bool,
    /// The type of the queues the transport owns (retry and dead-letter queues).
    pub queue_type: QueueType,
}

impl BrokerConfig {
    /// `url` is one URL or a comma-separated list. An entry that does not parse is kept and
    /// fails when tried (redacted); read the configuration through [`crate::config`] to reject
    /// a malformed list at startup instead.
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        Self::from_urls(BrokerUrls::lenient(&url.into()), connection_name)
    }

    /// From an already parsed list.
    pub fn from_urls(urls: BrokerUrls, connection_name: impl Into<String>) -> Self {
        Self {
            urls,
            connection_name: connection_name.into(),
            reconnect: Backoff::default(),
            shuffle: true,
            queue_type: QueueType::default(),
        }
    }

    /// Sets [`BrokerConfig::queue_type`].
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("urls", &self.urls)
            .field("connection_name", &self.connection_name)
            .field("reconnect", &self.reconnect)
            .field("shuffle", &self.shuffle)
            .field("queue_type", &self.queue_type)
            .finish()
    }
}

/// A node refused or could not be reached. The reason is redacted: lapin's errors and the
/// broker's reply texts can echo a URL (a vhost that holds one, for instance), so the cause
/// is kept as text with every credential removed rather than as the original error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to {node}: {reason}")]
pub struct ConnectError {
    /// `host:port`.
    pub node: String,
    pub reason: String,
}

/// A fresh connection and the node it reached.
pub struct Connected {
    pub connection: Connection,
    /// `host:port` of the node.
    pub node: String,
}

/// Opens one connection to one node, within [`CONNECT_TIMEOUT`].
pub async fn connect_to(url: &BrokerUrl, connection_name: &str) -> Result<Connection, ConnectError> {
    let fail = |reason: String| ConnectError { node: url.node().to_owned(), reason: redact(&reason) };
    let uri = url.uri().map_err(|reason| fail(reason.to_owned()))?.clone();
    let properties = ConnectionProperties::default().with_connection_name(connection_name.to_owned().into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(fail(error.to_string())),
        Err(_) => Err(fail(format!("no connection within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Opens one connection, trying each node once in the listed order; the error is the last
/// node's.
pub async fn connect(config: &BrokerConfig) -> Result<Connected, ConnectError> {
    Rotation::first().round(config).await
}

/// Which node a supervisor tries next (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    next: usize,
}

impl Rotation {
    /// A rotation starting at a random node when the configuration shuffles, else the first.
    pub fn new(config: &BrokerConfig) -> Self {
        let count = config.urls.len().max(1);
        Self { next: if config.shuffle { rand::random_range(0..count) } else { 0 } }
    }

    fn first() -> Self {
        Self { next: 0 }
    }

    /// Tries every node once, starting at the next one; on success the rotation moves past
    /// the node reached, so that the next round (after that link is lost) starts elsewhere.
    async fn round(&mut self, config: &BrokerConfig) -> Result<Connected, ConnectError> {
        let mut last = ConnectError { node: config.urls.nodes(), reason: "no broker URL".to_owned() };
        for offset in 0..config.urls.len() {
            let index = self.next.wrapping_add(offset);
            let Some(url) = config.urls.at(index) else { break };
            match connect_to(url, &config.connection_name).await {
                Ok(connection) => {
                    self.next = index.wrapping_add(1) % config.urls.len();
                    return Ok(Connected { connection, node: url.node().to_owned() });
                }
                Err(error) => {
                    if config.urls.len() > 1 {
                        tracing::info!(connection = %config.connection_name, node = %error.node, reason = %error.reason, "broker node unavailable; trying the next");
                    }
                    last = error;
                }
            }
        }
        Err(last)
    }
}

/// Connects, retrying with backoff between rounds over the nodes until it succeeds or
/// `shutdown` fires (then `None`). `round_failed` is called each time every node refused.
pub(crate) async fn connect_with_backoff(
    config: &BrokerConfig,
    rotation: &mut Rotation,
    shutdown: &CancellationToken,
    round_failed: impl Fn(),
) -> Option<Connected> {
    let mut attempt = 0;
    loop {
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            result = rotation.round(config) => result,
        };
        match result {
            Ok(connected) => return Some(connected),
            Err(error) => {
                round_failed();
                let delay = config.reconnect.delay(attempt);
                tracing::warn!(connection = %config.connection_name, attempt, ?delay, error = %error, "broker connection failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Closes a connection politely, ignoring a link that is already gone.
pub(crate) async fn close(connection: &Connection) {
    if connection.status().connected()
        && let Err(error) = connection.close(200, "shutdown".into()).await
    {
        tracing::debug!(error = %redact(&error.to_string()), "closing the broker connection failed");
    }
}

/// A link of this process and the node it is on, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInUse {
    /// The connection name (the service, or what a test named it).
    pub connection: String,
    /// `host:port`.
    pub node: String,
}

static IN_USE: Mutex<Vec<(u64, NodeInUse)>> = Mutex::new(Vec::new());
static NEXT_LINK: AtomicU64 = AtomicU64::new(0);

/// Every live broker link of this process and its node, for readiness.
pub fn nodes_in_use() -> Vec<NodeInUse> {
    IN_USE.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(_, node)| node.clone()).collect()
}

/// Registers a live link in [`nodes_in_use`] until dropped.
pub(crate) struct InUse(u64);

impl InUse {
    pub fn register(connection: &str, node: &str) -> Self {
        let id = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        let entry = NodeInUse { connection: connection.to_owned(), node: node.to_owned() };
        IN_USE.lock().unwrap_or_else(PoisonError::into_inner).push((id, entry));
        Self(id)
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        IN_USE.lock().unwrap_or_else(PoisonError::into_inner).retain(|(id, _)| *id != self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert!(backoff.delay(0) <= Duration::from_millis(100));
        assert!(backoff.delay(0) >= Duration::from_millis(50));
        assert!(backoff.delay(3) >= Duration::from_millis(400));
        assert!(backoff.delay(30) <= Duration::from_secs(1));
    }

    #[test]
    fn shuffled_rotations_start_anywhere_unshuffled_ones_at_the_first() {
        let mut config = BrokerConfig::new("amqp://a:1/v,amqp://b:2/v,amqp://c:3/v", "t");
        let starts: std::collections::HashSet<usize> = (0..200).map(|_| Rotation::new(&config).next).collect();
        assert_eq!(starts.len(), 3, "{starts:?}");
        config.shuffle = false;
        assert!((0..20).all(|_| Rotation::new(&config).next == 0));
    }

    #[tokio::test]
    async fn a_round_tries_every_node_and_names_the_last_without_credentials() {
        // Ports 1..3 of loopback refuse at once.
        let config = BrokerConfig::new("amqp://u:hunter2@127.0.0.1:1/v,amqp://u:hunter2@127.0.0.1:2/v", "t");
        let mut rotation = Rotation::first();
        let error = rotation.round(&config).await.err().unwrap();
        assert_eq!(error.node, "127.0.0.1:2");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let bad = BrokerConfig::new("amqp://u:p@127.0.0.1:1/v,nope://u:hunter2@x/v", "t");
        let error = Rotation::first().round(&bad).await.err().unwrap();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn links_in_use_are_listed_until_dropped() {
        let name = format!("in-use-{}", rand::random::<u64>());
        let link = InUse::register(&name, "n1:5672");
        assert!(nodes_in_use().iter().any(|node| node.connection == name && node.node == "n1:5672"));
        drop(link);
        assert!(!nodes_in_use().iter().any(|node| node.connection == name));
    }
}
