//! # user-service
//!
//! Owns the `users` database: a projection of user profiles (id, email, name, createdAt) fed
//! by `user.created` events, and answers `{cmd:"get_user"}` from it over RabbitMQ, for Rust
//! and NestJS callers alike.
//!
//! Guarantees:
//! - `get_user` answers `{id, email, name, createdAt}`, or an error object: 400 for an id
//!   that is not a UUID, 404 for an unknown user, 503 when the database does not answer
//!   within `DATABASE_TIMEOUT_MS` (never a hang: callers get a reply before their timeout);
//! - the projection is idempotent and order-independent: an event seen twice, or an older
//!   event after a newer one, leaves the same single row ([`users::Users::project`]);
//! - an event is acked only after its row is committed; a database outage retries it with
//!   backoff, then parks it in `<events queue>.dlq`; data Postgres rejects and undecodable
//!   messages are parked at once;
//! - the schema is owned here, through the embedded migrations run at start;
//! - on shutdown, consumers stop first and in-flight handlers finish within the grace period.
//!
//! Modules: [`config`] (settings), [`app`] (build and run), [`state`] (what the handlers
//! share), [`get_user`] and [`projection`] (the two handlers), [`users`] (the table),
//! [`lookups`] (concurrent reads coalesced into few queries), [`db`] (pool and migrations),
//! [`error`] (what crosses each boundary).

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod get_user;
pub mod lookups;
pub mod projection;
pub mod state;
pub mod users;

pub use app::{App, StartupError};
pub use config::{Config, SERVICE};
