//! The client: NestJS's `ClientProxy` counterpart (`send` and `emit`).
//!
//! One connection carries everything. Requests are published on one channel that also
//! consumes RabbitMQ's direct reply-to pseudo-queue, and replies are matched to callers by
//! correlation id, so any number of concurrent `send`s share it. Every `send` has a deadline;
//! a reply arriving after it is dropped. Events go out on a second channel in publisher-confirm
//! mode, persistent, and `emit` returns only once the broker confirmed them.
//!
//! When the link breaks, pending `send`s fail at once with [`RpcError::Unavailable`], new ones
//! fail fast until the supervisor has reconnected, and nothing needs a restart.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use serde::Serialize;
use serde_json::{Value, value::RawValue};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    connection::{self, BrokerConfig},
    contracts::{Event, Request, pattern_value},
    error::{DecodeError, EmitError, RpcError},
    topology,
    trace::TraceContext,
    wire::{self, EventPacket, Reply, RequestPacket},
};

/// How a [`Client`] connects and what it defaults to.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub broker: BrokerConfig,
    /// The queue requests go to unless a call names another (NestJS: `options.queue`).
    pub queue: Option<String>,
    /// Declare [`ClientConfig::queue`] (durable, no arguments) on connect, as a NestJS client
    /// asserts its queue, so requests wait for a server that starts later.
    pub declare_queue: bool,
    /// The topic exchange events go to unless an emit names another target.
    pub events_exchange: Option<String>,
    /// The deadline of a `send` unless the call sets its own.
    pub timeout: Duration,
    /// How long an `emit` waits for the broker's publisher confirm before reporting the
    /// broker unavailable (the event may or may not have been stored: publish it again).
    pub confirm_timeout: Duration,
}

impl ClientConfig {
    pub fn new(broker: BrokerConfig) -> Self {
        Self {
            broker,
            queue: None,
            declare_queue: true,
            events_exchange: None,
            timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(30),
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn events_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.events_exchange = Some(exchange.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Per-call settings of a `send`.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Overrides [`ClientConfig::queue`].
    pub queue: Option<String>,
    /// Overrides [`ClientConfig::timeout`].
    pub timeout: Option<Duration>,
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitTarget {
    /// A topic exchange, routing key = the pattern. Having no bound queue is not an error:
    /// an event nobody subscribes to is a legitimate event.
    Exchange(String),
    /// A queue, through the default exchange. A missing queue is an error
    /// ([`EmitError::Unroutable`]).
    Queue(String),
}

/// Per-call settings of an `emit`.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    /// Overrides [`ClientConfig::events_exchange`].
    pub target: Option<EmitTarget>,
    /// The AMQP `message_id` (the event id); a new UUID when absent.
    pub message_id: Option<String>,
    /// The trace to continue; the current task's trace (or a new one) when absent.
    pub trace: Option<TraceContext>,
}

/// A cheap-to-clone handle on the client's connection. See the module docs.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    link: RwLock<Option<Link>>,
    /// Calls waiting for their reply, by call number (see [`Inner::correlation_id`]).
    pending: Mutex<HashMap<u64, Pending>>,
    /// Correlation ids are this random prefix (unique per client) and a call number: unique
    /// for the client's whole life, so a late reply can never be taken for a newer call's.
    id_prefix: String,
    next_call: AtomicU64,
    connected: watch::Sender<bool>,
    /// Set when a channel of the link died on its own (the broker can close one channel and
    /// keep the connection): the supervisor then rebuilds the whole link.
    relink: Notify,
}

/// The channels of one live connection.
#[derive(Clone)]
struct Link {
    /// Publishes requests and consumes their replies (direct reply-to needs both on one channel).
    rpc: Channel,
    /// Publisher-confirm mode, for events.
    events: Channel,
}

impl Link {
    /// Closes both channels, before the connection is closed on shutdown.
    async fn close(&self) {
        for channel in [&self.rpc, &self.events] {
            if let Err(error) = channel.close(200, "shutdown".into()).await {
                tracing::debug!(error = %error, "closing a channel failed");
            }
        }
    }
}

struct Pending {
    /// The reply's `response` as raw JSON, decoded by the caller straight into its type.
    reply: oneshot::Sender<Result<Box<RawValue>, PendingError>>,
    /// The latest item of a streamed reply; the stream's value once it is disposed.
    last: Option<Box<RawValue>>,
}

enum PendingError {
    Remote(Value),
    NoHandler,
    Decode(DecodeError),
    Lost(Option<lapin::Error>),
}

impl Client {
    /// Starts the client's connection supervisor; it runs until `shutdown` fires.
    /// Calls made before the first connection is up fail with [`RpcError::Unavailable`]:
    /// use [`Client::wait_connected`] at startup when that matters.
    pub fn start(config: ClientConfig, shutdown: CancellationToken) -> Self {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            link: RwLock::new(None),
            pending: Mutex::default(),
            id_prefix: format!("{:016x}-", rand::random::<u64>()),
            next_call: AtomicU64::new(1),
            connected,
            relink: Notify::new(),
        });
        tokio::spawn(supervise(Arc::clone(&inner), shutdown));
        Self { inner }
    }

    /// Whether the client currently has a live link to the broker.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// A receiver of the connected flag, for readiness endpoints (`ops::Readiness::flag`).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// Waits until the client is connected, up to `deadline`; returns whether it is.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        let mut connected = self.inner.connected.subscribe();
        tokio::time::timeout(deadline, connected.wait_for(|up| *up)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// Sends a typed request to the configured queue and waits for its typed reply.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, RpcError> {
        self.send_with(request, SendOptions::default()).await
    }

    /// [`Client::send`] with per-call options.
    pub async fn send_with<R: Request>(&self, request: &R, options: SendOptions) -> Result<R::Response, RpcError> {
        let response = self.send_data(&R::pattern(), request, options).await?;
        serde_json::from_str(response.get())
            .map_err(|source| RpcError::Decode { pattern: R::PATTERN.to_owned(), source: DecodeError::Type(source) })
    }

    /// The untyped request path, for tools and patterns without a Rust contract.
    pub async fn send_raw(&self, pattern: &Value, data: &Value, options: SendOptions) -> Result<Value, RpcError> {
        let response = self.send_data(pattern, data, options).await?;
        serde_json::from_str(response.get())
            .map_err(|source| RpcError::Decode { pattern: wire::route_key(pattern), source: DecodeError::Type(source) })
    }

    async fn send_data<T: Serialize + ?Sized>(
        &self,
        pattern: &Value,
        data: &T,
        options: SendOptions,
    ) -> Result<Box<RawValue>, RpcError> {
        let config = &self.inner.config;
        let timeout = options.timeout.unwrap_or(config.timeout);
        let queue = options.queue.or_else(|| config.queue.clone()).unwrap_or_default();
        // Only errors name the pattern: rendered then, not on every call.
        let pattern_text = || wire::route_key(pattern);
        let call = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        let id = self.inner.correlation_id(call);
        let body = serde_json::to_vec(&RequestPacket { pattern, data, id: &id }).map_err(RpcError::Encode)?;

        let link = self.link().ok_or(RpcError::Unavailable { reason: "not connected", source: None })?;
        let (reply, receiver) = oneshot::channel();
        self.pending().insert(call, Pending { reply, last: None });
        // Removes the entry whatever happens below, so a late reply finds nothing to complete.
        let _forget = Forget { inner: &self.inner, call };

        let mut headers = FieldTable::default();
        TraceContext::outgoing().inject(&mut headers);
        let properties = BasicProperties::default()
            .with_correlation_id(id.as_str().into())
            .with_reply_to(topology::REPLY_TO.into())
            .with_headers(headers);
        // The deadline covers the publish too: a publish racing a breaking link must not hang.
        let exchange = async {
            link.rpc
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
                .await
                .map_err(|source| RpcError::Unavailable { reason: "publish failed", source: Some(source) })?;
            Ok(receiver.await)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(RpcError::Timeout { pattern: pattern_text(), timeout }),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(_))) => Err(RpcError::Unavailable { reason: "client stopped", source: None }),
            Ok(Ok(Ok(Ok(value)))) => Ok(value),
            Ok(Ok(Ok(Err(error)))) => Err(match error {
                PendingError::Remote(error) => {
                    RpcError::Remote { pattern: pattern_text(), error: crate::error::RemoteError(error) }
                }
                PendingError::NoHandler => RpcError::NoHandler { pattern: pattern_text() },
                PendingError::Decode(source) => RpcError::Decode { pattern: pattern_text(), source },
                PendingError::Lost(source) => RpcError::Unavailable { reason: "connection lost", source },
            }),
        }
    }

    /// Emits a typed event to the configured events exchange, routing key = its pattern.
    pub async fn emit<E: Event>(&self, event: &E) -> Result<(), EmitError> {
        self.emit_with(event, EmitOptions::default()).await
    }

    /// [`Client::emit`] with per-call options (target, event id, trace).
    pub async fn emit_with<E: Event>(&self, event: &E, options: EmitOptions) -> Result<(), EmitError> {
        self.emit_data(&pattern_value(E::PATTERN), event, options).await
    }

    /// The untyped event path. Returns once the broker confirmed the persistent message.
    pub async fn emit_raw(&self, pattern: &Value, data: &Value, options: EmitOptions) -> Result<(), EmitError> {
        self.emit_data(pattern, data, options).await
    }

    async fn emit_data<T: Serialize + ?Sized>(
        &self,
        pattern: &Value,
        data: &T,
        options: EmitOptions,
    ) -> Result<(), EmitError> {
        let body = serde_json::to_vec(&EventPacket { pattern, data }).map_err(EmitError::Encode)?;
        let target = options
            .target
            .or_else(|| self.inner.config.events_exchange.clone().map(EmitTarget::Exchange))
            .unwrap_or_else(|| EmitTarget::Queue(self.inner.config.queue.clone().unwrap_or_default()));
        let (exchange, routing_key, mandatory) = match &target {
            EmitTarget::Exchange(exchange) => (exchange.as_str(), wire::route_key(pattern), false),
            EmitTarget::Queue(queue) => ("", queue.clone(), true),
        };
        let mut headers = FieldTable::default();
        options.trace.unwrap_or_else(TraceContext::outgoing).inject(&mut headers);
        let message_id = options.message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let properties =
            BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into()).with_headers(headers);

        let link = self.link().ok_or(EmitError::Unavailable { reason: "not connected", source: None })?;
        let publish_options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
        let confirmed = async {
            link.events
                .basic_publish(exchange.into(), routing_key.as_str().into(), publish_options, &body, properties)
                .await
                .map_err(|source| EmitError::Unavailable { reason: "publish failed", source: Some(source) })?
                .await
                .map_err(|source| EmitError::Unavailable { reason: "no confirm", source: Some(source) })
        };
        let confirm = tokio::time::timeout(self.inner.config.confirm_timeout, confirmed)
            .await
            .map_err(|_| EmitError::Unavailable { reason: "no confirm in time", source: None })
            .flatten()
            .inspect_err(|_| {
                if !link.events.status().connected() {
                    self.inner.relink.notify_one();
                }
            })?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(EmitError::Unroutable { target: routing_key }),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(EmitError::Nacked),
        }
    }

    fn link(&self) -> Option<Link> {
        self.inner.link.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.inner.pending()
    }
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_link(&self, link: Option<Link>) {
        let up = link.is_some();
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link;
        self.connected.send_replace(up);
    }

    /// The correlation id (and packet `id`) of call number `call`.
    fn correlation_id(&self, call: u64) -> String {
        format!("{}{call:x}", self.id_prefix)
    }

    /// The call number a correlation id names, if it is one of this client's.
    fn call_number(&self, correlation_id: &str) -> Option<u64> {
        let number = correlation_id.strip_prefix(self.id_prefix.as_str())?;
        u64::from_str_radix(number, 16).ok()
    }

    /// Completes the pending call a reply belongs to; replies nobody waits for are dropped.
    fn deliver(&self, delivery: &Delivery) {
        let Some(correlation_id) = delivery.properties.correlation_id().as_ref() else {
            tracing::debug!("dropped a reply without correlation id");
            return;
        };
        let Some(id) = self.call_number(correlation_id.as_str()) else {
            tracing::debug!(correlation_id = %correlation_id, "dropped a reply to an unknown correlation id");
            return;
        };
        // Parsed before taking the lock: the lock is shared by every concurrent caller.
        let reply = Reply::parse_raw(&delivery.data);
        let mut pending = self.pending();
        let Some(entry) = pending.get_mut(&id) else {
            tracing::debug!(correlation_id = %correlation_id, "dropped a late or unknown reply");
            return;
        };
        let outcome = match reply {
            Ok(Reply::Partial(value)) => {
                entry.last = Some(value);
                return;
            }
            Ok(Reply::Success(value)) => Ok(value),
            Ok(Reply::Disposed) => Ok(entry.last.take().unwrap_or_else(|| RawValue::NULL.to_owned())),
            Ok(Reply::Error(error)) => {
                Err(PendingError::Remote(serde_json::from_str(error.get()).unwrap_or(Value::Null)))
            }
            Ok(Reply::NoHandler { .. }) => Err(PendingError::NoHandler),
            Err(error) => Err(PendingError::Decode(error.into())),
        };
        if let Some(entry) = pending.remove(&id) {
            // The caller may have given up in the meantime; nothing to do then.
            let _ = entry.reply.send(outcome);
        }
    }

    /// Fails every pending call: the link they were waiting on is gone.
    fn fail_pending(&self, source: Option<&lapin::Error>) {
        for (_, entry) in self.pending().drain() {
            let _ = entry.reply.send(Err(PendingError::Lost(source.cloned())));
        }
    }
}

struct Forget<'a> {
    inner: &'a Inner,
    call: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.inner.pending().remove(&self.call);
    }
}

/// Connect, serve replies until the link breaks, fail what was pending, start over.
async fn supervise(inner: Arc<Inner>, shutdown: CancellationToken) {
    let name = inner.config.broker.connection_name.clone();
    while let Some(connection) = connection::connect_with_backoff(&inner.config.broker, &shutdown).await {
        let lost = match connection::bounded(open(&inner.config, &connection)).await {
            Ok((link, replies)) => {
                inner.set_link(Some(link.clone()));
                tracing::info!(connection = %name, "client connected");
                let lost = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => None,
                    lost = read_replies(&inner, replies) => Some(lost),
                    () = inner.relink.notified() => Some(None),
                };
                inner.set_link(None);
                if lost.is_none() {
                    link.close().await;
                }
                lost
            }
            Err(error) => Some(Some(error)),
        };
        match lost {
            None => {
                inner.fail_pending(None);
                connection::close(&connection).await;
                break;
            }
            Some(error) => {
                tracing::warn!(connection = %name, error = ?error, "client lost the broker; reconnecting");
                inner.fail_pending(error.as_ref());
                connection::close(&connection).await;
            }
        }
    }
    inner.set_link(None);
    inner.fail_pending(None);
}

async fn open(config: &ClientConfig, connection: &Connection) -> Result<(Link, lapin::Consumer), lapin::Error> {
    let rpc = connection.create_channel().await?;
    let replies = rpc
        .basic_consume(
            topology::REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await?;
    let events = connection.create_channel().await?;
    events.confirm_select(ConfirmSelectOptions::default()).await?;
    if let Some(exchange) = &config.events_exchange {
        topology::declare_topic_exchange(&events, exchange).await?;
    }
    if let (Some(queue), true) = (&config.queue, config.declare_queue) {
        topology::declare_queue(&events, queue, true).await?;
    }
    Ok((Link { rpc, events }, replies))
}

/// Reads replies until the consumer ends; returns why it ended.
async fn read_replies(inner: &Inner, mut replies: lapin::Consumer) -> Option<lapin::Error> {
    while let Some(delivery) = replies.next().await {
        match delivery {
            Ok(delivery) => inner.deliver(&delivery),
            Err(error) => return Some(error),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn correlation_ids_are_unique_and_only_this_clients_parse_back() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let broker = BrokerConfig::new("amqp://127.0.0.1:1/%2f", "ids");
        let (one, other) = (
            Client::start(ClientConfig::new(broker.clone()), shutdown.clone()),
            Client::start(ClientConfig::new(broker), shutdown),
        );
        let ids: Vec<String> = (1..=1000).map(|call| one.inner.correlation_id(call)).collect();
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
        for (call, id) in (1..=1000).zip(&ids) {
            assert_eq!(one.inner.call_number(id), Some(call));
            assert_eq!(other.inner.call_number(id), None, "another client's id must not match");
        }
        for junk in
            ["", "abc", &format!("{}zz", one.inner.id_prefix), &format!("{}{}", one.inner.id_prefix, "1".repeat(40))]
        {
            assert_eq!(one.inner.call_number(junk), None, "{junk}");
        }
    }
}
