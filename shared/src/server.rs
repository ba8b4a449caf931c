//! The server: NestJS's microservice counterpart, with axum's handler model.
//!
//! ```ignore
//! let handle = Server::new(state)
//!     .request(get_user)                       // @MessagePattern({cmd:"get_user"})
//!     .event(on_user_created)                  // @EventPattern("user.created")
//!     .listen(Listener::queue("user_queue"))
//!     .listen(Listener::queue("user_events_queue").bind_events("events"))
//!     .start(config, shutdown);
//! ```
//!
//! Guarantees beyond NestJS's defaults, invisible to a NestJS peer:
//! - a message is acked only after its handler finished (and its reply, retry or parking was
//!   published); a crash means redelivery, never loss;
//! - at most `prefetch` messages per queue are in flight, which bounds the concurrency;
//! - anything that is not a packet (not JSON, no pattern) is parked in `<queue>.dlq` and the
//!   consumer keeps serving; a panicking handler is an internal error, not a dead consumer;
//! - a body larger than `max_message_bytes` is parked unread (`x-failure: too-large`), and a
//!   caller waiting for it is answered 413;
//! - `<queue>.dlq` is bounded (`dlq`); when it is full a message being parked stays in its
//!   queue and is tried again with backoff, never dropped;
//! - a lost broker link is re-established with backoff (through the next node of a cluster),
//!   topology redeclared, consumers resumed; a consumer the broker cancels on its own (its
//!   queue deleted, or moved off a lost node) is resumed on the same channel;
//! - on shutdown: consumers are cancelled, in-flight handlers get `shutdown_grace` to finish,
//!   then the connection is closed (unfinished messages return to their queue).

mod consume;
mod extract;
mod handler;
mod reply;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{StreamExt, stream::SelectAll};
use lapin::{
    Channel, Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{FieldTable, ShortString},
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use extract::{FromMessage, MessageContext, State, amqp_to_json};
pub use handler::{EventHandler, InvalidPayload, RequestHandler};

use crate::{
    broker_urls::redact,
    connection::{self, BrokerConfig, Connected, InUse, Rotation},
    contracts::{Event, Request, pattern_value},
    retry::{FailureQueues, RetryPolicy},
    topology::{self, DlqLimits},
    wire::route_key,
};
use handler::Route;

/// How a [`Server`] connects and behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub broker: BrokerConfig,
    /// Names the service in dead-letter headers and logs.
    pub service: String,
    /// Unacked messages per queue, hence handlers running at once per queue.
    pub prefetch: u16,
    pub retry: RetryPolicy,
    /// How long in-flight handlers may run on after shutdown began.
    pub shutdown_grace: Duration,
    /// Largest message body handled; a bigger one is parked unread.
    pub max_message_bytes: usize,
    /// Bounds of each consumed queue's dead-letter queue.
    pub dlq: DlqLimits,
}

/// The default of [`ServerConfig::max_message_bytes`]: 256 KiB, far above any contract's
/// payload, and with the default prefetch of 32 at most 8 MiB of bodies held per queue.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

impl ServerConfig {
    pub fn new(broker: BrokerConfig, service: impl Into<String>) -> Self {
        Self {
            broker,
            service: service.into(),
            prefetch: 32,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            dlq: DlqLimits::default(),
        }
    }
}

/// A queue the server consumes, and how it is declared.
#[derive(Debug, Clone)]
pub struct Listener {
    queue: String,
    durable: bool,
    events_exchange: Option<String>,
}

impl Listener {
    /// Consumes `queue`, declared durable with no arguments.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self { queue: queue.into(), durable: true, events_exchange: None }
    }

    /// Also binds the queue to this topic exchange with every event handler's pattern.
    pub fn bind_events(mut self, exchange: impl Into<String>) -> Self {
        self.events_exchange = Some(exchange.into());
        self
    }

    /// Declares the queue durable or not (it must match what NestJS peers assert).
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
}

/// Handlers, state and queues; [`Server::start`] runs them.
pub struct Server<S> {
    state: S,
    routes: HashMap<String, Route<S>>,
    event_patterns: Vec<String>,
    listeners: Vec<Listener>,
}

impl<S: Clone + Send + Sync + 'static> Server<S> {
    pub fn new(state: S) -> Self {
        Self { state, routes: HashMap::new(), event_patterns: Vec::new(), listeners: Vec::new() }
    }

    /// Registers a request handler; its payload type names the contract.
    pub fn request<T, H: RequestHandler<S, T>>(mut self, handler: H) -> Self {
        let pattern = route_key(&<H::Request as Request>::pattern());
        self.routes.insert(pattern, Route::request(handler));
        self
    }

    /// Registers an event handler; its payload type names the contract.
    pub fn event<T, H: EventHandler<S, T>>(mut self, handler: H) -> Self {
        let pattern = route_key(&pattern_value(<H::Event as Event>::PATTERN));
        self.routes.insert(pattern.clone(), Route::event(handler));
        self.event_patterns.push(pattern);
        self
    }

    /// Adds a queue to consume.
    pub fn listen(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Starts serving until `shutdown` fires; the handle tells readiness and waits for the end.
    pub fn start(self, config: ServerConfig, shutdown: CancellationToken) -> ServerHandle {
        let (ready, ready_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: self.state,
            routes: self.routes,
            event_patterns: self.event_patterns,
            listeners: self.listeners,
            config,
        });
        let task = tokio::spawn(run(shared, shutdown, ready));
        ServerHandle { ready: ready_rx, task }
    }
}

/// A running server.
pub struct ServerHandle {
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Whether every queue is being consumed right now (false while reconnecting).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A receiver of the readiness flag, for health endpoints.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Waits until the server is consuming, up to `deadline`; returns whether it is.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(deadline, ready.wait_for(|up| *up)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// Waits until the server has stopped (after shutdown and draining).
    pub async fn stopped(self) {
        if let Err(error) = self.task.await {
            tracing::error!(error = %error, "server task failed");
        }
    }
}

/// What every handler task shares.
pub(crate) struct Shared<S> {
    state: S,
    routes: HashMap<String, Route<S>>,
    event_patterns: Vec<String>,
    listeners: Vec<Listener>,
    config: ServerConfig,
}

/// The channels a handler task uses to answer; shared by the queue's handler tasks.
pub(crate) type Outlet = Arc<Channels>;

pub(crate) struct Channels {
    /// The consuming channel: acks and replies.
    pub channel: Channel,
    /// Retries and parking, through the publisher-confirm channel.
    pub failures: FailureQueues,
    pub queue: Arc<str>,
}

async fn run<S: Clone + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    shutdown: CancellationToken,
    ready: watch::Sender<bool>,
) {
    let mut tasks = JoinSet::new();
    let service = shared.config.service.clone();
    let mut rotation = Rotation::new(&shared.config.broker);
    while let Some(Connected { connection, node }) =
        connection::connect_with_backoff(&shared.config.broker, &mut rotation, &shutdown, || {}).await
    {
        let in_use = InUse::register(&shared.config.broker.connection_name, &node);
        let outcome = serve(&shared, &connection, &node, &shutdown, &ready, &mut tasks).await;
        ready.send_replace(false);
        drop(in_use);
        match outcome {
            Ok(channels) => {
                drain(&mut tasks, shared.config.shutdown_grace).await;
                // Channels first, then the connection: the handlers' acks are all sent by now.
                for channel in channels {
                    if let Err(error) = channel.close(200, "shutdown".into()).await {
                        tracing::debug!(error = %error, "closing a channel failed");
                    }
                }
                connection::close(&connection).await;
                break;
            }
            Err(error) => {
                let error = redact(&error.to_string());
                tracing::warn!(service = %service, node = %node, error = %error, "server lost the broker; reconnecting");
                connection::close(&connection).await;
            }
        }
    }
    drain(&mut tasks, shared.config.shutdown_grace).await;
    tracing::info!(service = %service, "server stopped");
}

/// Declares the topology, consumes every queue and dispatches deliveries until shutdown
/// (`Ok`, with the channels to close once in-flight handlers are done) or until the link
/// breaks (`Err`).
async fn serve<S: Clone + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    connection: &Connection,
    node: &str,
    shutdown: &CancellationToken,
    ready: &watch::Sender<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<Channel>, LinkLost> {
    let (mut consumers, mut cancels, confirms) = connection::bounded(consume_all(shared, connection)).await?;
    ready.send_replace(true);
    tracing::info!(service = %shared.config.service, node = %node, queues = shared.listeners.len(), "server consuming");

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let mut channels = vec![confirms];
                for (channel, tag) in cancels {
                    if let Err(error) = channel.basic_cancel(tag, BasicCancelOptions::default()).await {
                        tracing::debug!(error = %error, "cancelling a consumer failed");
                    }
                    channels.push(channel);
                }
                return Ok(channels);
            }
            next = consumers.next() => match next {
                Some((_, outlet, Some(Ok(delivery)))) => {
                    tasks.spawn(consume::dispatch(Arc::clone(shared), outlet, delivery));
                    // Finished tasks are collected here rather than by awaiting them, so that
                    // a finishing handler never has to wake this loop.
                    while let Some(finished) = tasks.try_join_next() {
                        if let Err(error) = finished {
                            tracing::error!(error = %error, "a handler task failed");
                        }
                    }
                }
                Some((index, _, Some(Err(error)))) => {
                    tracing::debug!(queue = %shared.listeners[index].queue, "consumer failed");
                    return Err(LinkLost::Broker(error));
                }
                Some((index, outlet, None)) => {
                    // Not our cancel (ours happens on shutdown, which returned above).
                    ready.send_replace(false);
                    let listener = &shared.listeners[index];
                    tracing::warn!(queue = %listener.queue, node = %node, "the broker cancelled the consumer; resuming");
                    let consumer = connection::bounded(consume(shared, connection, &outlet.channel, listener)).await?;
                    cancels[index].1 = consumer.tag();
                    consumers.push(deliveries(index, outlet, consumer));
                    ready.send_replace(true);
                    tracing::info!(queue = %listener.queue, node = %node, "consumer resumed");
                }
                None => return Err(LinkLost::ConsumersEnded),
            },
        }
    }
}

/// What a consumer stream yields: a delivery, an error (the link broke), or `None` once, when
/// the consumer was cancelled.
type Next = Option<Result<lapin::message::Delivery, lapin::Error>>;
type Deliveries = SelectAll<futures::stream::BoxStream<'static, (usize, Outlet, Next)>>;

/// One queue's deliveries, tagged with its listener and outlet, ending with a `None` that
/// reports the consumer's cancellation (the broker's, since ours ends the loop first).
fn deliveries(
    index: usize,
    outlet: Outlet,
    consumer: lapin::Consumer,
) -> futures::stream::BoxStream<'static, (usize, Outlet, Next)> {
    let ended = Arc::clone(&outlet);
    consumer
        .map(move |delivery| (index, Arc::clone(&outlet), Some(delivery)))
        .chain(futures::stream::once(async move { (index, ended, None) }))
        .boxed()
}

/// Declares a listener's queues and starts consuming it on `channel`.
async fn consume<S>(
    shared: &Shared<S>,
    connection: &Connection,
    channel: &Channel,
    listener: &Listener,
) -> Result<lapin::Consumer, lapin::Error> {
    declare(shared, connection, channel, listener).await?;
    channel
        .basic_consume(listener.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
}

/// Opens a channel per queue, declares its topology and starts consuming it.
async fn consume_all<S>(
    shared: &Shared<S>,
    connection: &Connection,
) -> Result<(Deliveries, Vec<(Channel, ShortString)>, Channel), lapin::Error> {
    let confirms = connection.create_channel().await?;
    confirms.confirm_select(ConfirmSelectOptions::default()).await?;
    let service: Arc<str> = shared.config.service.as_str().into();
    let mut consumers = SelectAll::new();
    let mut cancels = Vec::new();
    for (index, listener) in shared.listeners.iter().enumerate() {
        let channel = connection.create_channel().await?;
        channel.basic_qos(shared.config.prefetch, BasicQosOptions::default()).await?;
        let consumer = consume(shared, connection, &channel, listener).await?;
        cancels.push((channel.clone(), consumer.tag()));
        let queue: Arc<str> = listener.queue.as_str().into();
        let failures =
            FailureQueues::new(confirms.clone(), Arc::clone(&queue), Arc::clone(&service), shared.config.retry.clone());
        let outlet = Arc::new(Channels { channel, failures, queue });
        consumers.push(deliveries(index, outlet, consumer));
    }
    Ok((consumers, cancels, confirms))
}

async fn declare<S>(
    shared: &Shared<S>,
    connection: &Connection,
    channel: &Channel,
    listener: &Listener,
) -> Result<(), lapin::Error> {
    topology::declare_queue(channel, &listener.queue, listener.durable).await?;
    declare_failure_queues(shared, connection, &listener.queue).await?;
    if let Some(exchange) = &listener.events_exchange {
        topology::declare_topic_exchange(channel, exchange).await?;
        for pattern in &shared.event_patterns {
            topology::bind(channel, &listener.queue, exchange, pattern).await?;
        }
    }
    Ok(())
}

/// Declares `queue`'s dead-letter and delay queues on a channel of their own. A dead-letter
/// queue that already exists with other arguments (declared without bounds by an older
/// version) is kept as it is, with a warning, rather than stopping the service: the broker
/// refuses the declaration (PRECONDITION_FAILED) and closes that channel only.
async fn declare_failure_queues<S>(
    shared: &Shared<S>,
    connection: &Connection,
    queue: &str,
) -> Result<(), lapin::Error> {
    let (delays, queue_type) = (shared.config.retry.delays(), shared.config.broker.queue_type);
    let mut channel = connection.create_channel().await?;
    if let Err(error) = topology::declare_dlq(&channel, queue, queue_type, shared.config.dlq).await {
        if !precondition_failed(&error) {
            return Err(error);
        }
        tracing::warn!(
            dlq = %topology::dlq_name(queue),
            "the dead-letter queue exists with other arguments (unbounded, from an older version?): kept \
             as it is; delete it once empty to bound it"
        );
        channel = connection.create_channel().await?;
    }
    topology::declare_delay_queues(&channel, queue, &delays, queue_type).await?;
    if let Err(error) = channel.close(200, "declared".into()).await {
        tracing::debug!(error = %error, "closing the declaring channel failed");
    }
    Ok(())
}

fn precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// Why [`serve`] returned before shutdown.
#[derive(Debug, thiserror::Error)]
enum LinkLost {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled every consumer")]
    ConsumersEnded,
}

/// Lets in-flight handlers finish within `grace`; what is still running then is aborted and
/// its message, never acked, returns to the queue.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration) {
    if tasks.is_empty() {
        return;
    }
    let in_flight = tasks.len();
    let finished = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(in_flight, still_running = tasks.len(), "shutdown grace elapsed; aborting handlers");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
