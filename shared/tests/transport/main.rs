//! Integration tests of the transport against a real RabbitMQ: every test declares its own
//! uniquely named queues and exchange, so they run in parallel and re-run without cleanup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod array_patterns;
mod client_lifecycle;
mod cluster_replies;
mod declarations;
mod emit_errors;
mod events;
mod failover;
mod limits;
mod metrics;
mod nest_interop;
mod panics;
mod parking;
mod poison;
mod prefetch;
mod reconnect;
mod retry_schedule;
mod rpc;
mod settlement;
mod shutdown;
mod topology_recovery;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Event, EventFailure, Listener, MessageContext, Request,
    RetryPolicy, RpcException, Server, ServerConfig, ServerHandle, State,
};
use tokio::sync::Notify;

/// The workspace's one patience (the test kit's), for readiness, polling and shutdown.
pub use tests::DEADLINE;

/// `{cmd:"echo"}`: answers its text, optionally after a delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub text: String,
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echoed {
    pub text: String,
    pub trace_id: String,
}

impl Request for Echo {
    type Response = Echoed;
    const PATTERN: &'static str = r#"{"cmd":"echo"}"#;
}

/// `{"role":"test","cmd":"fail"}` (keys deliberately unsorted): answers the error it is told to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    pub status: Option<u16>,
}

impl Request for Fail {
    type Response = Echoed;
    const PATTERN: &'static str = r#"{"role":"test","cmd":"fail"}"#;
}

/// `test.ping`: recorded by the handler; fails while `failures_left` is positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub n: u32,
}

impl Event for Ping {
    const PATTERN: &'static str = "test.ping";
}

/// `test.broken`: always fails, transiently or permanently as told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broken {
    pub permanent: bool,
}

impl Event for Broken {
    const PATTERN: &'static str = "test.broken";
}

/// What the test handlers share with the test body.
#[derive(Default)]
pub struct Recorder {
    pub pings: Mutex<Vec<(Ping, MessageContext)>>,
    pub failures_left: AtomicU32,
    pub started: Notify,
    /// Notified when a delayed echo begins (the request is in the handler's hands).
    pub echo_started: Notify,
    pub release: Notify,
    pub hold_pings: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("the test handler was told to fail")]
pub struct ToldToFail;

async fn echo(
    State(recorder): State<Arc<Recorder>>,
    ctx: MessageContext,
    request: Echo,
) -> Result<Echoed, RpcException> {
    if request.delay_ms > 0 {
        recorder.echo_started.notify_one();
        tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
    }
    Ok(Echoed { text: request.text, trace_id: ctx.trace.trace_id() })
}

async fn fail(request: Fail) -> Result<Echoed, RpcException> {
    match request.status {
        Some(status) => Err(RpcException::status(status, "told to fail")),
        None => Err(RpcException::internal(ToldToFail)),
    }
}

async fn ping(State(recorder): State<Arc<Recorder>>, ctx: MessageContext, event: Ping) -> Result<(), EventFailure> {
    if recorder.hold_pings.load(Ordering::SeqCst) {
        recorder.started.notify_one();
        recorder.release.notified().await;
    }
    let left = recorder.failures_left.load(Ordering::SeqCst);
    if left > 0 {
        recorder.failures_left.store(left - 1, Ordering::SeqCst);
        return Err(EventFailure::transient(ToldToFail));
    }
    recorder.pings.lock().unwrap().push((event, ctx));
    Ok(())
}

async fn broken(event: Broken) -> Result<(), EventFailure> {
    if event.permanent { Err(EventFailure::permanent(ToldToFail)) } else { Err(EventFailure::transient(ToldToFail)) }
}

/// One test's private slice of the broker: a queue, an events exchange, a server and a client.
pub struct Fixture {
    pub amqp_url: String,
    pub queue: String,
    pub exchange: String,
    pub recorder: Arc<Recorder>,
    pub server: Option<ServerHandle>,
    pub server_shutdown: CancellationToken,
    pub client: Client,
    pub client_shutdown: CancellationToken,
}

pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_millis(50),
        multiplier: 2,
        max_delay: Duration::from_millis(200),
    }
}

impl Fixture {
    pub async fn start() -> Self {
        Self::start_with(|config| config).await
    }

    /// Starts a server (with the test handlers) and a client, both connected to `amqp_url`.
    pub async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Self {
        tests::logs::init();
        let amqp_url = tests::amqp_url().await;
        Self::start_on(&amqp_url, &amqp_url, configure).await
    }

    pub async fn start_on(
        server_url: &str,
        client_url: &str,
        configure: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> Self {
        let queue = tests::unique("transport");
        let exchange = tests::unique("events");
        let recorder = Arc::new(Recorder::default());
        let mut config = ServerConfig::new(BrokerConfig::new(server_url, "transport-test-server"), "transport-test");
        config.retry = fast_retry(3);
        config.prefetch = 64;
        let config = configure(config);
        let server_shutdown = CancellationToken::new();
        let server = start_server(Arc::clone(&recorder), &queue, &exchange, config, server_shutdown.clone());
        assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
        let client_shutdown = CancellationToken::new();
        let client = Client::start(
            ClientConfig::new(BrokerConfig::new(client_url, "transport-test-client"))
                .queue(queue.clone())
                .events_exchange(exchange.clone())
                .timeout(Duration::from_secs(5)),
            client_shutdown.clone(),
        );
        assert!(client.wait_connected(DEADLINE).await, "client did not connect");
        Self {
            amqp_url: client_url.to_owned(),
            queue,
            exchange,
            recorder,
            server: Some(server),
            server_shutdown,
            client,
            client_shutdown,
        }
    }

    pub fn dlq(&self) -> String {
        shared::topology::dlq_name(&self.queue)
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop_server(&mut self) {
        self.server_shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.stopped().await;
        }
    }
}

pub fn start_server(
    recorder: Arc<Recorder>,
    queue: &str,
    exchange: &str,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> ServerHandle {
    Server::new(recorder)
        .request(echo)
        .request(fail)
        .event(ping)
        .event(broken)
        .listen(Listener::queue(queue).bind_events(exchange))
        .start(config, shutdown)
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server_shutdown.cancel();
        self.client_shutdown.cancel();
    }
}

/// Deletes `queue`, its DLQ and the delay queues `policy` declares (best effort).
pub async fn delete_queue_and_failure_queues(probe: &tests::BrokerProbe, queue: &str, policy: &RetryPolicy) {
    let mut names = vec![queue.to_owned(), shared::topology::dlq_name(queue)];
    names.extend(policy.delays().into_iter().map(|delay| shared::topology::retry_queue_name(queue, delay)));
    probe.delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
}
