//! The `credentials` table: user id, email (unique case-insensitively), argon2id hash.
//!
//! The uniqueness rule lives in the database (a unique index on `lower(email)`), not in a
//! check-then-insert: concurrent signups with one email race to the index, exactly one wins,
//! and the others' unique violation is turned into [`CredentialsError::EmailTaken`] right here
//! where the query runs.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{account::Email, password::PasswordDigest};

/// The unique index enforcing one account per email.
const EMAIL_KEY: &str = "credentials_email_key";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("credentials query failed")]
    Database(#[source] sqlx::Error),
}

/// What login needs of an account.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredCredentials {
    pub id: Uuid,
    pub password_hash: String,
}

/// Inserts a new account inside the caller's transaction.
pub async fn insert(
    connection: &mut PgConnection,
    id: Uuid,
    email: &Email,
    digest: &PasswordDigest,
    created_at: DateTime<Utc>,
) -> Result<(), CredentialsError> {
    sqlx::query("INSERT INTO credentials (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(email.as_str())
        .bind(&digest.0)
        .bind(created_at)
        .execute(connection)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(EMAIL_KEY) => {
                CredentialsError::EmailTaken
            }
            _ => CredentialsError::Database(error),
        })?;
    Ok(())
}

/// The account registered under `email` (any case), if there is one.
pub async fn find_by_email(pool: &PgPool, email: &Email) -> Result<Option<StoredCredentials>, sqlx::Error> {
    sqlx::query_as::<_, StoredCredentials>("SELECT id, password_hash FROM credentials WHERE lower(email) = lower($1)")
        .bind(email.as_str())
        .fetch_optional(pool)
        .await
}
