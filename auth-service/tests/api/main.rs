//! auth-service against real Postgres and RabbitMQ: a fresh database, unique queue and
//! exchange names (a `tests::ServiceEnv`) and an in-process app on 127.0.0.1:0 per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod test_app;
mod user_service_stub;

mod cli;
mod credential_timing;
mod health;
mod in_flight_shutdown;
mod login;
mod login_throttle;
mod logs;
mod openapi;
mod outbox;
mod overload;
mod rate_limit;
mod schemathesis;
mod secrets_in_logs;
mod signals;
mod signup;
mod tokens;
mod users;
mod validation;
