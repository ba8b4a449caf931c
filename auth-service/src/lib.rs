//! # auth-service
//!
//! Owns credentials (user id, email unique case-insensitively, argon2id hash) and the
//! `user.created` event. Serves, on the public port (`HTTP_ADDR`):
//!
//! | route | module |
//! | --- | --- |
//! | `POST /auth/signup` | [`signup`]: credential + outbox row in one transaction, 201 |
//! | `POST /auth/login` | [`login`]: argon2id verify, HS256 access token ([`token`]) |
//! | `GET /users/{id}`, `GET /users/me` | [`users`]: `get_user` RPC to the user-service |
//! | `GET /healthz` | liveness |
//! | `GET /openapi.json` | [`openapi`] |
//!
//! and on the operations port (`OPS_ADDR`) `shared::ops`' `/healthz`, `/readyz` (Postgres and
//! broker) and `/metrics`.
//!
//! Guarantees: no lost events (transactional [`outbox`] + confirmed publishing by the
//! [`relay`], at least once, never two instances publishing one row at once); signup works
//! while the broker is down; errors are problem+json ([`error`]) with field-level validation
//! ([`account`], [`json`]); `/auth/*` is rate limited per client IP ([`rate_limit`]), failed
//! logins per email and per IP ([`login_throttle`]); the public port sheds load beyond its
//! in-flight limit and times requests out ([`overload`]), the hashing queue is bounded
//! ([`password`]); every
//! request has a request id, a span and a W3C trace ([`request_context`]); passwords and tokens
//! are never logged; shutdown finishes requests, flushes the outbox, then disconnects ([`app`]).

pub mod account;
pub mod app;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod json;
pub mod login;
pub mod login_throttle;
pub mod openapi;
pub mod outbox;
pub mod overload;
pub mod password;
pub mod rate_limit;
pub mod relay;
pub mod request_context;
pub mod routes;
pub mod signup;
pub mod state;
pub mod token;
pub mod users;

pub use app::{App, StartupError};
pub use config::{Config, SERVICE};
