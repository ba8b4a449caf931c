//! The connection pool and this service's schema (embedded migrations, run at start).

use secrecy::ExposeSecret;
use shared::config::DatabaseSettings;
use sqlx::{
    PgPool,
    migrate::{MigrateError, Migrator},
    postgres::PgPoolOptions,
};

/// `credentials` and `outbox`, from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connects (the database must exist; this service does not create it). A request waits at
/// most `DATABASE_TIMEOUT_MS` for a pooled connection, then is answered 503.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.database_max_connections.get())
        .acquire_timeout(settings.database_timeout)
        .connect(settings.database_url.expose_secret())
        .await
}

/// Brings the schema up to date. Safe with several instances starting at once (sqlx takes
/// an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database answers a query (for `/readyz`).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query!("SELECT 1 AS one").fetch_one(pool).await.is_ok()
}
