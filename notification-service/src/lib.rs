//! # notification-service — exactly one welcome mail per user
//!
//! Owns the welcome mail and its database (`notifications`, table `sent_mails`). Consumes
//! `user.created` ([`shared::contracts::UserCreated`]) from `notification_queue` (durable, no
//! arguments, bound to the `events` exchange; a NestJS client may also emit straight to the
//! queue) and sends one mail per user through a pooled lettre SMTP transport: a plain-text and
//! an HTML part, subject "Welcome, Ada!", `Message-ID: <{event_id}@notification-service>`.
//!
//! ## Guarantees
//! - **At most one mail per event, and per user** (except the window below): the event id is
//!   claimed in `sent_mails` inside a transaction held across the SMTP send, committed only
//!   once the server accepted the mail ([`sent_mails`]). Redeliveries, duplicate publishes and
//!   concurrent deliveries of one event find the record (or wait on the claim) and send nothing.
//! - **At least one mail**: the event is acked only after the mail was accepted and recorded.
//!   Transient failures (connection refused, timeouts, SMTP 4xx, database unavailable) are
//!   retried with exponential backoff through the transport's delay queues, then parked.
//! - **Nothing dropped silently**: permanent failures (SMTP 5xx, an address lettre rejects)
//!   and undecodable events go to `notification_queue.dlq` at once, with `x-failure`,
//!   `x-error`, `x-attempts` and `x-service` headers. The consumer keeps serving.
//! - **Untrusted names and addresses are harmless**: names lose control characters and line
//!   breaks before they reach a header and are HTML-escaped in the HTML part; addresses go
//!   through lettre's parser; event ids that are not safe tokens are hashed ([`event_id`]).
//!
//! The event id is the AMQP `message_id`. Events without one (a stock NestJS `client.emit`)
//! get a deterministic id: UUID v5 with the user id as namespace and `user.created` as name.
//!
//! ## The one duplicate window
//! If the SMTP server accepted a mail and the process dies (or the database connection
//! breaks) before the record commits, the claim rolls back and the event, never acked, is
//! delivered again: a second mail goes out. It carries the **same `Message-ID`**, derived
//! from the event id, so mail systems that deduplicate by `Message-ID` (many mailbox stores
//! and clients do, Gmail among them) show it once, and anyone can tell the two are one.
//! Closing the window entirely would need the SMTP server to take part in our transaction,
//! which SMTP cannot.
//!
//! ## Modules
//! [`config`] (environment), [`app`] (startup, ops port), [`welcome_mail`] (the handler),
//! [`sent_mails`] (the claim/record table), [`mailer`] (SMTP and failure classes),
//! [`welcome_message`] (templates), [`recipient`] (parsing untrusted input), [`event_id`],
//! [`error`] (what fails, and whether it is retried).

pub mod app;
pub mod config;
pub mod error;
pub mod event_id;
pub mod mailer;
pub mod recipient;
pub mod sent_mails;
pub mod welcome_mail;
pub mod welcome_message;

pub use app::{App, BuildError, SERVICE_NAME};
pub use config::{Config, ConfigError};
pub use error::WelcomeMailError;
pub use event_id::EventId;
pub use mailer::Mailer;
