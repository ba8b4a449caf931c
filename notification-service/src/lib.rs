//! # notification-service — exactly one welcome mail per user
//!
//! Owns the welcome mail and its database (`notifications`, table `sent_mails`). Consumes
//! `user.created` ([`shared::contracts::UserCreated`]) from `notification_queue` (durable, no
//! arguments, bound to the `events` exchange; a NestJS client may also emit straight to the
//! queue) and sends one mail per user through a pooled lettre SMTP transport: a plain-text and
//! an HTML part, subject "Welcome, Ada!", `Message-ID: <{event_id}@notification-service>`.
//!
//! ## Guarantees
//! - **At most one mail per event, and per user** (except the one ambiguous case below): the
//!   event id is claimed in `sent_mails` by a committed statement before the SMTP
//!   conversation, and recorded as sent after the server's `250` ([`sent_mails`]). No
//!   database connection is held while SMTP runs. Redeliveries, duplicate publishes and
//!   concurrent deliveries of one event find the record (or a running claim, and retry later)
//!   and send nothing.
//! - **No fault of Postgres, the broker or SMTP causes a second mail**: after the `250`,
//!   recording "sent" is retried in the handler, the delivery unacked, until it sticks; a
//!   failure to record is never a reason to send again ([`welcome_mail`]).
//! - **At least one mail**: the event is acked only after the mail was accepted and recorded
//!   (or, at shutdown, accepted). Transient failures (connection refused or dropped before the
//!   `250`, timeouts, SMTP 4xx, database unavailable, another attempt still running) are
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
//! ## The one ambiguous case
//! A claim found `sending` by an attempt that did not finish (the process crashed, or
//! another instance's claim outlived the lease) may or may not have been accepted by the SMTP
//! server. By default it is resent with the **same `Message-ID`** (logged and counted as
//! `ambiguous_resend`); `AMBIGUOUS_SEND=park` parks it in the DLQ instead. The resend is a
//! second mail only when this process crashed in the instant between a `250` and its record.
//!
//! ## Modules
//! [`config`] (settings), [`app`] (startup, ops port), [`state`] (what handlers share),
//! [`db`] (pool, migrations), [`welcome_mail`] (the handler), [`sent_mails`] (claims and
//! records), [`in_flight`] (this process's running attempts), [`mailer`] (SMTP and failure
//! classes), [`welcome_message`] (templates), [`recipient`] (parsing untrusted input),
//! [`event_id`], [`error`] (what fails, and whether it is retried).

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod event_id;
pub mod in_flight;
pub mod mailer;
pub mod recipient;
pub mod sent_mails;
pub mod state;
pub mod welcome_mail;
pub mod welcome_message;

pub use app::{App, StartupError};
pub use config::{Config, SERVICE};
pub use error::WelcomeMailError;
pub use event_id::EventId;
pub use mailer::Mailer;
pub use sent_mails::AmbiguousSend;
