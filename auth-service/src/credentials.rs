//! The `credentials` table: user id, email (unique case-insensitively), argon2id hash.
//!
//! The uniqueness rule lives in the database (a unique index on `lower(email)`), not in a
//! check-then-insert: concurrent signups with one email race to the index, exactly one wins,
//! and the others' unique violation is turned into [`CredentialsError::EmailTaken`] right here
//! where the query runs.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    account::Email,
    outbox::{self, NewEvent},
    password::PasswordDigest,
};

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
#[derive(Debug)]
pub struct StoredCredentials {
    pub id: Uuid,
    pub password_hash: String,
}

/// Inserts a new account and the event announcing it in one statement: Postgres runs it as
/// one transaction (both rows or neither), and it costs one round trip instead of the five of
/// `BEGIN`, two `INSERT`s, `NOTIFY` and `COMMIT`. Relays are notified at commit.
pub async fn insert_announced(
    pool: &PgPool,
    account: NewCredentials<'_>,
    event: NewEvent,
) -> Result<(), CredentialsError> {
    // `$7::text::json`: the payload goes in as text, so Postgres keeps it byte for byte.
    sqlx::query!(
        "WITH account AS (\
             INSERT INTO credentials (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)\
         ), event AS (\
             INSERT INTO outbox (id, pattern, payload, traceparent) VALUES ($5, $6, $7::text::json, $8)\
         ) \
         SELECT pg_notify($9, '')",
        account.id,
        account.email.as_str(),
        account.digest.0,
        account.created_at,
        event.id,
        event.pattern,
        event.payload.get(),
        event.traceparent,
        outbox::CHANNEL,
    )
    .execute(pool)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(EMAIL_KEY) => {
            CredentialsError::EmailTaken
        }
        _ => CredentialsError::Database(error),
    })?;
    Ok(())
}

/// A new account's row.
#[derive(Debug, Clone, Copy)]
pub struct NewCredentials<'a> {
    pub id: Uuid,
    pub email: &'a Email,
    pub digest: &'a PasswordDigest,
    pub created_at: DateTime<Utc>,
}

/// The account registered under `email` (any case), if there is one.
pub async fn find_by_email(pool: &PgPool, email: &Email) -> Result<Option<StoredCredentials>, sqlx::Error> {
    sqlx::query_as!(
        StoredCredentials,
        "SELECT id, password_hash FROM credentials WHERE lower(email) = lower($1)",
        email.as_str()
    )
    .fetch_optional(pool)
    .await
}
