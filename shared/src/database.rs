//! The database plumbing every service shares (feature `database`): a pool built from
//! [`DatabaseSettings`] and migrations run at start with patience for a database that comes
//! up after the service. The queries, tables and migrations stay in the service that owns them.

use std::{str::FromStr, time::Duration};

use secrecy::ExposeSecret as _;
use sqlx::{
    Connection as _, PgPool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseSettings;

/// How long start-up keeps trying to reach the database before giving up (a database that
/// starts a little later than the service, as in a fresh compose stack, is not an error).
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);
/// The pause between two start-up attempts.
const STARTUP_RETRY: Duration = Duration::from_millis(500);
/// A connection used successfully this recently is taken to work without a ping; one idle for
/// longer is checked before it is used again.
pub const TRUSTED_IF_USED_WITHIN: Duration = Duration::from_secs(1);

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

/// A pool on `DATABASE_URL` named `application_name` (as `pg_stat_activity` shows it): at most
/// `DATABASE_MAX_CONNECTIONS` connections, each call waiting at most `DATABASE_TIMEOUT_MS` for
/// one, and the server cancelling any statement that runs longer than that, so no query
/// outlives its caller.
///
/// Connections are opened lazily, so the pool exists while the database is down (readiness
/// says so). sqlx's default pings every connection it hands out, a round trip per query; it
/// already checks each connection when it comes back to the pool, so only one that has sat
/// idle since is pinged first.
pub fn pool(settings: &DatabaseSettings, application_name: &str) -> Result<PgPool, DatabaseError> {
    let timeout = settings.database_timeout;
    let statement_timeout = format!("{}ms", timeout.as_millis());
    let options = PgConnectOptions::from_str(settings.database_url.expose_secret())
        .map_err(DatabaseError::InvalidUrl)?
        .application_name(application_name)
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.database_max_connections.get())
        .acquire_timeout(timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > TRUSTED_IF_USED_WITHIN {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Runs `migrator` (the service's embedded `migrations/`), retrying while the database is
/// unreachable for up to 30 s. Safe with several instances starting at once: sqlx takes an
/// advisory lock.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, shutdown: &CancellationToken) -> Result<(), DatabaseError> {
    let give_up = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        let error = match migrator.run(pool).await {
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

/// Whether the database answers now (for `/readyz`).
pub async fn ping(pool: &PgPool) -> bool {
    match pool.acquire().await {
        Ok(mut connection) => connection.ping().await.is_ok(),
        Err(_) => false,
    }
}
