//! user-service against real RabbitMQ and Postgres: each test starts the service in-process
//! (`App::build`, as the binary does) on a fresh database and queue names of its own; `cli`
//! also runs the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod cli;
mod coalescing;
mod get_user;
mod in_flight_shutdown;
mod message_span;
mod nest;
mod ops;
mod outage;
mod projection;
mod shutdown;
mod signals;
mod support;
mod worker_threads;
