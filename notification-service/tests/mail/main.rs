//! Integration tests of notification-service against a real SMTP server (the kit's sink),
//! RabbitMQ and Postgres: one binary, one module per behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ambiguous;
mod binary;
mod claims;
mod cli;
mod competing;
mod database_faults;
mod dead_letter;
mod dedup;
mod hostile_input;
mod in_flight_shutdown;
mod instances;
mod mailer;
mod message_span;
mod nest_interop;
mod ops;
mod retry;
mod separate_processes;
mod signals;
mod support;
mod welcome_mail;
