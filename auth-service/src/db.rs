//! The connection pool and this service's schema (embedded migrations, run at start).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    PgPool,
    migrate::{MigrateError, Migrator},
    postgres::PgPoolOptions,
};

/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// `credentials` and `outbox`, from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connects (the database must exist; this service does not create it).
pub async fn connect(url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url.expose_secret())
        .await
}

/// Brings the schema up to date. Safe with several instances starting at once (sqlx takes
/// an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
