//! The service's own database: the pool every query goes through, and the schema brought up
//! to date at start (the embedded `migrations/`: the `sent_mails` claims and records). The plumbing is the
//! one every service shares ([`shared::database`]).

use shared::{CancellationToken, config::DatabaseSettings};
use sqlx::{PgPool, migrate::Migrator};

pub use shared::database::DatabaseError;

use crate::config::SERVICE;

/// `sent_mails`, from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A lazy pool on `DATABASE_URL` (see [`shared::database::pool`]).
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, DatabaseError> {
    shared::database::pool(settings, SERVICE.name)
}

/// Brings the schema up to date, waiting up to 30 s for a database that is not up yet.
pub async fn migrate(pool: &PgPool, shutdown: &CancellationToken) -> Result<(), DatabaseError> {
    shared::database::migrate(pool, &MIGRATOR, shutdown).await
}
