//! What a caller sets: the client's defaults and the per-call options that override them.

use std::time::Duration;

use crate::{connection::BrokerConfig, trace::TraceContext};

/// How a [`Client`](super::Client) connects and what it defaults to.
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
    /// ([`EmitError::Unroutable`](crate::EmitError::Unroutable)).
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
