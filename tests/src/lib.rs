//! The test kit shared by every crate's integration tests: real infrastructure (from the
//! environment, else testcontainers, else the machine's own services), isolation per test
//! (fresh databases, unique queue names), one service harness ([`ServiceEnv`], [`DEADLINE`]),
//! polling helpers, a TCP chaos proxy, an in-process SMTP sink and drivers for the NestJS
//! interop project under `tests/nest`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod asyncapi;
pub mod nest;
pub mod smtp;

pub mod broker;
pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod eventually;
pub mod harness;
pub mod infra;
pub mod local_postgres;
pub mod local_rabbit;
pub mod logs;
pub mod names;
pub mod otlp;
pub mod process;
pub mod schemathesis;
mod teardown;
pub mod urls;

pub use broker::{BrokerProbe, ProbedMessage};
pub use chaos::ChaosProxy;
pub use db::TestDb;
pub use eventually::{eventually, eventually_some};
pub use harness::{DEADLINE, ServiceEnv};
pub use infra::{amqp_url, postgres_url};
pub use names::unique;
