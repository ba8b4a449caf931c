//! End-to-end tests of the whole system: auth-service, user-service and notification-service
//! talking over a real RabbitMQ, each with its own real Postgres database, mailing through a
//! real SMTP server.
//!
//! By default every test starts its own stack in-process ([`stack::Stack::start`]) on the test
//! kit's harness (`tests::ServiceEnv`): fresh databases, uniquely named queues and exchange, an
//! in-process SMTP sink. With `E2E_STACK=1` the same tests target an already running stack
//! instead (e.g. `docker compose up`), found through `E2E_AUTH_URL` (default
//! `http://127.0.0.1:3000`), `E2E_MAILPIT_URL` (a Mailpit API, default `http://127.0.0.1:8025`),
//! `E2E_AMQP_URL` and `E2E_USER_QUEUE`; every test uses unique e-mail addresses, so they can
//! share one stack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod flows;
mod mailbox;
mod stack;

/// How long the eventually consistent parts (projection, mail) may take: the kit's one deadline.
pub use tests::DEADLINE;
