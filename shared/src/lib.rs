//! # shared — the protocol crate
//!
//! Message contracts and a RabbitMQ transport that speaks NestJS 11's `Transport.RMQ` wire
//! format, so Rust services and NestJS apps can call each other in both directions.
//!
//! | NestJS | here |
//! | --- | --- |
//! | `client.send({cmd:"get_user"}, {id})` | [`Client::send`]`(&GetUser { id })` → `User` |
//! | `client.emit("user.created", user)` | [`Client::emit`]`(&UserCreated { … })` (confirmed) |
//! | `@MessagePattern({cmd:"get_user"})` | [`Server::request`]`(get_user)` |
//! | `@EventPattern("user.created")` | [`Server::event`]`(on_user_created)` |
//! | `RpcException({status, message})` | [`RpcException::status`] |
//!
//! Modules by role: [`contracts`] (patterns and payload types), [`wire`] (the packet format),
//! [`client`], [`server`], [`topology`] (queue and exchange names), [`retry`] (the failure
//! policy), [`trace`] (W3C trace context over AMQP), [`event_id`] (which event a delivery is,
//! for consumers that act once per event), plus the plumbing every service shares:
//! [`connection`] and [`broker_urls`] (one node or a cluster's), [`config`] (every setting,
//! declared once), [`startup`] (the binaries' `main`), [`ops`], [`telemetry`], [`shutdown`].
//!
//! What it guarantees beyond NestJS: acks after the handler finished, bounded prefetch,
//! persistent and confirmed events, retries through delay queues then a dead-letter queue,
//! reconnection without restarts, graceful shutdown, typed errors on every path.

pub mod asyncapi;
pub mod broker_urls;
pub mod client;
pub mod config;
pub mod connection;
pub mod contracts;
#[cfg(feature = "database")]
pub mod database;
pub mod error;
pub mod event_id;
pub mod ops;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod topology;
pub mod trace;
pub mod wire;

pub use broker_urls::BrokerUrls;
pub use client::{Client, ClientConfig, EmitOptions, EmitTarget, SendOptions};
pub use connection::{Backoff, BrokerConfig};
pub use contracts::{Event, Request};
pub use error::{EmitError, EventFailure, FailureKind, RemoteError, RpcError, RpcException};
pub use event_id::EventId;
pub use retry::RetryPolicy;
pub use server::{Listener, MessageContext, Server, ServerConfig, ServerHandle, State};
pub use topology::QueueType;
pub use trace::TraceContext;
pub use wire::ErrorObject;

pub use tokio_util::sync::CancellationToken;
