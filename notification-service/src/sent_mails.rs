//! The `sent_mails` table: which events (and users) have had their welcome mail.
//!
//! Claiming is an `INSERT … ON CONFLICT DO NOTHING` inside a transaction that stays open while
//! the mail is sent and commits only after the SMTP server accepted it:
//! - a committed row means "mailed": a later delivery of the event conflicts and sends nothing;
//! - a delivery running concurrently (a redelivery racing the first, a duplicate publish on
//!   another consumer) blocks on the uncommitted row until the first one finishes, then sees
//!   the row (duplicate) or, if the first failed and rolled back, claims it and sends;
//! - a failure or crash before the commit rolls the claim back (Postgres drops the
//!   transaction with the connection), so a retry starts from a clean slate.
//!
//! The price: one pooled connection per mail in flight (the pool is sized from `PREFETCH`).

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::event_id::EventId;

/// What is recorded about a mail.
#[derive(Debug, Clone)]
pub struct NewSentMail<'a> {
    pub event_id: &'a EventId,
    pub user_id: Uuid,
    pub recipient: &'a str,
    pub message_id: &'a str,
}

/// The exclusive right to send one event's mail, held until [`Claim::mark_sent`],
/// [`Claim::release`] or drop (which rolls it back too).
#[must_use = "dropping a claim releases it without recording the mail"]
pub struct Claim {
    transaction: Transaction<'static, Postgres>,
    event_id: EventId,
}

/// Claims `mail.event_id` for sending; `None` when its mail was already sent, for this event
/// or (a welcome being once per user) for another event about the same user.
pub async fn claim(pool: &PgPool, mail: &NewSentMail<'_>) -> Result<Option<Claim>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO sent_mails (event_id, user_id, recipient, message_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(mail.event_id.as_str())
    .bind(mail.user_id)
    .bind(mail.recipient)
    .bind(mail.message_id)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if inserted == 0 {
        transaction.rollback().await?;
        return Ok(None);
    }
    Ok(Some(Claim { transaction, event_id: mail.event_id.clone() }))
}

impl Claim {
    /// Records that the SMTP server accepted the mail, and releases the claim.
    pub async fn mark_sent(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sent_mails SET sent_at = clock_timestamp() WHERE event_id = $1")
            .bind(self.event_id.as_str())
            .execute(&mut *self.transaction)
            .await?;
        self.transaction.commit().await
    }

    /// Gives the claim up (the mail was not sent) so that a retry can take it at once.
    pub async fn release(self) {
        if let Err(error) = self.transaction.rollback().await {
            // The connection is gone, and Postgres rolled the transaction back with it.
            tracing::debug!(error = %error, "rolling back a claim failed");
        }
    }
}

/// Whether the mail for `event_id` is recorded as sent (for tests and operators).
pub async fn is_sent(pool: &PgPool, event_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sent_mails WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(pool)
        .await
}
