//! The service's own database: the pool every statement goes through, and the schema brought
//! up to date at start (the embedded `migrations/`).

use std::{str::FromStr, time::Duration};

use secrecy::ExposeSecret;
use shared::{CancellationToken, config::DatabaseSettings};
use sqlx::{
    PgPool,
    migrate::MigrateError,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::SERVICE;

/// How long start-up keeps trying to reach the database before giving up (a database that
/// starts a little later than the service, as in a fresh compose stack, is not an error).
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);
/// The pause between two start-up attempts.
const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// Why the database could not be prepared at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL itself is malformed (its text is not repeated: it may hold a password).
    #[error("DATABASE_URL is not a valid Postgres URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database stayed unreachable for 30 s, refused the connection (e.g. no such
    /// database) or a migration failed.
    #[error("the database could not be migrated")]
    Migrate(#[source] MigrateError),
    #[error("shutdown was requested while waiting for the database")]
    Cancelled,
}

/// A pool on `DATABASE_URL`: at most `DATABASE_MAX_CONNECTIONS` connections, each call
/// waiting at most `DATABASE_TIMEOUT_MS` for one, and the server cancelling any statement
/// that runs longer.
///
/// Connections are opened lazily, so the pool exists while the database is down. A mail
/// holds a connection only for one short statement at a time (claim, record, release), never
/// while SMTP runs, which is why the pool does not grow with `PREFETCH`.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, DatabaseError> {
    let statement_timeout = format!("{}ms", settings.database_timeout.as_millis());
    let options = PgConnectOptions::from_str(settings.database_url.expose_secret())
        .map_err(DatabaseError::InvalidUrl)?
        .application_name(SERVICE.name)
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.database_max_connections.get())
        .acquire_timeout(settings.database_timeout)
        .connect_lazy_with(options))
}

/// Runs the embedded migrations, retrying while the database is unreachable for up to 30 s.
/// Safe with several instances starting at once: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool, shutdown: &CancellationToken) -> Result<(), DatabaseError> {
    let give_up = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        let error = match sqlx::migrate!().run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let unreachable = matches!(&error, MigrateError::Execute(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)));
        if !unreachable || tokio::time::Instant::now() >= give_up {
            return Err(DatabaseError::Migrate(error));
        }
        tracing::warn!(error = %error, "database not reachable yet; retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Err(DatabaseError::Cancelled),
            () = tokio::time::sleep(STARTUP_RETRY) => {}
        }
    }
}
