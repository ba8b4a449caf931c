//! # auth-service
//!
//! Owns credentials (user id, email unique case-insensitively, argon2id hash) and the
//! `user.created` event. Serves, on one HTTP port:
//!
//! | route | module |
//! | --- | --- |
//! | `POST /auth/signup` | [`signup`]: credential + outbox row in one transaction, 201 |
//! | `POST /auth/login` | [`login`]: argon2id verify, HS256 access token ([`token`]) |
//! | `GET /users/{id}`, `GET /users/me` | [`users`]: `get_user` RPC to the user-service |
//! | `GET /healthz`, `/readyz`, `/metrics` | `shared::ops` (readiness: Postgres and broker) |
//! | `GET /openapi.json` | [`openapi`] |
//!
//! Guarantees: no lost events (transactional [`outbox`] + confirmed publishing by the
//! [`relay`], at least once, never two instances publishing one row at once); signup works
//! while the broker is down; errors are problem+json ([`error`]) with field-level validation
//! ([`account`], [`json`]); `/auth/*` is rate limited per client IP ([`rate_limit`]); every
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
pub mod openapi;
pub mod outbox;
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
