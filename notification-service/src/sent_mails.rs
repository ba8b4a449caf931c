//! The `sent_mails` table: the claim an attempt takes before it talks to SMTP, and the record
//! that the mail was accepted.
//!
//! Every statement is short and commits on its own; no connection or transaction is held
//! while SMTP runs, so no database fault can undo what the SMTP server already accepted:
//! 1. **Claim** ([`SentMails::claim`]): insert the row as `sending` (attempt 1, this process
//!    as owner), or take over a `sending` row whose attempt did not finish. Committed before
//!    the first SMTP command.
//! 2. **Record** ([`SentMails::record_sent`]) after the SMTP server's `250`: the row becomes
//!    `sent`. The caller retries this until it sticks; a failure to record is never a reason
//!    to send again.
//! 3. **Release** ([`SentMails::release`]) when the SMTP server did not accept the mail: the
//!    row is deleted, so the retry (or another event about the same user) starts clean.
//!
//! A claim found `sending` is one of three things:
//! - an attempt still running: this process's own (the caller checks that before claiming,
//!   see [`crate::in_flight`]) or another instance's younger than the claim lease: **busy**,
//!   retry later, send nothing now;
//! - an attempt of this process that is known to have ended before any `250` (its release
//!   failed): taken over, a plain retry;
//! - an attempt that did not finish, a crashed process's or another instance's older than the
//!   lease: **the one ambiguous case**, nobody knows whether the SMTP server accepted it. It is
//!   taken over and resent with the Message-ID stored in the claim ([`AmbiguousSend::Resend`])
//!   or left alone and reported ([`AmbiguousSend::Park`]).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::event_id::EventId;

/// How often [`SentMails::claim`] starts over when the row it conflicted with vanished before
/// it could be read (a release racing the claim).
const CLAIM_ROUNDS: usize = 3;

/// What to do with a redelivered event whose earlier attempt did not finish: the SMTP server
/// may or may not have accepted that mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AmbiguousSend {
    /// Send it again with the same Message-ID: at least one mail, at worst two that mail
    /// systems can tell are one.
    Resend,
    /// Park the event in the DLQ with the reason, for an operator to decide.
    Park,
}

/// The claims and records of one service process.
///
/// Guarantees: every call is one statement (the claim at most three, each committed on its
/// own) bounded by the database timeout; a claim's row names this process (`owner`) and the
/// attempt, so a release or record can never touch another attempt's claim by mistake.
#[derive(Clone)]
pub struct SentMails {
    pool: PgPool,
    /// This process: a random id per start, so a restarted service never mistakes the claims
    /// of its previous run for attempts still running.
    owner: Uuid,
    lease: Duration,
    on_ambiguous: AmbiguousSend,
    timeout: Duration,
}

/// The mail an attempt wants to send.
#[derive(Debug, Clone)]
pub struct NewSentMail<'a> {
    pub event_id: &'a EventId,
    pub user_id: Uuid,
    pub recipient: &'a str,
    pub message_id: &'a str,
}

/// An attempt's right to send one event's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub event_id: EventId,
    pub attempt: i32,
    /// The Message-ID to send: the one of the first attempt when this one takes a claim over,
    /// so a resend is recognisably the same message.
    pub message_id: String,
    /// Whether an earlier attempt did not finish and may have been accepted.
    pub ambiguous: bool,
}

/// What [`SentMails::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Send: the claim is committed.
    Won(Claim),
    /// The welcome mail of this event, or of this user under another event, was sent (or is
    /// another event's to finish): send nothing.
    AlreadySent,
    /// Another attempt is still running (or, for another event about the same user, has not
    /// been resolved yet): retry later.
    Busy,
    /// An earlier attempt did not finish and [`AmbiguousSend::Park`] is set: report it.
    Ambiguous { attempt: i32 },
}

/// What [`SentMails::record_sent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The row is `sent`.
    Sent,
    /// Another attempt took the claim over meanwhile (this one looked abandoned) and has
    /// already finished with it (recorded it, or released it after its own send failed);
    /// this attempt's mail went out all the same.
    Overtaken,
}

/// A database call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the sent-mails table is unavailable")]
    Sql(#[from] sqlx::Error),
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
}

impl SentMails {
    /// `lease`: how long another process's `sending` claim is presumed to be a running
    /// attempt; `timeout` bounds every call.
    pub fn new(pool: PgPool, lease: Duration, on_ambiguous: AmbiguousSend, timeout: Duration) -> Self {
        Self { pool, owner: Uuid::new_v4(), lease, on_ambiguous, timeout }
    }

    /// This process's id in the `owner` column.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims `mail.event_id` for an attempt of this process. The caller guarantees that no
    /// other attempt of this process is running for the event; `earlier_unsure` says whether
    /// one of this process's earlier attempts may have been accepted (see
    /// [`crate::in_flight`]): if not, a claim this process left behind is retaken plainly.
    pub async fn claim(&self, mail: &NewSentMail<'_>, earlier_unsure: bool) -> Result<Claimed, StoreError> {
        for _ in 0..CLAIM_ROUNDS {
            if let Some(attempt) = self.bounded(self.insert(mail)).await? {
                let message_id = mail.message_id.to_owned();
                return Ok(Claimed::Won(Claim {
                    event_id: mail.event_id.clone(),
                    attempt,
                    message_id,
                    ambiguous: false,
                }));
            }
            if let Some(claim) = self.bounded(self.take_over(mail, earlier_unsure)).await? {
                return Ok(Claimed::Won(claim));
            }
            if let Some(found) = self.bounded(self.inspect(mail)).await? {
                return Ok(found);
            }
        }
        Ok(Claimed::Busy)
    }

    /// Attempt 1 of a new event: the insert conflicts (and returns nothing) when the event or
    /// the user already has a row.
    async fn insert(&self, mail: &NewSentMail<'_>) -> Result<Option<i32>, sqlx::Error> {
        sqlx::query_scalar!(
            "INSERT INTO sent_mails (event_id, user_id, recipient, message_id, state, attempt, owner)
             VALUES ($1, $2, $3, $4, 'sending', 1, $5)
             ON CONFLICT DO NOTHING
             RETURNING attempt",
            mail.event_id.as_str(),
            mail.user_id,
            mail.recipient,
            mail.message_id,
            self.owner,
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Takes over this event's `sending` claim when its attempt is over: this process's own
    /// (the caller holds the event, so that attempt is not running), or another's older than
    /// the lease. The `WHERE` decides; `SET` sees the row as it was, which is what makes
    /// `ambiguous` say whether the attempt taken over may have been accepted.
    async fn take_over(&self, mail: &NewSentMail<'_>, earlier_unsure: bool) -> Result<Option<Claim>, sqlx::Error> {
        let own_known_unaccepted = !earlier_unsure;
        let resend = self.on_ambiguous == AmbiguousSend::Resend;
        let row = sqlx::query!(
            r#"UPDATE sent_mails
                  SET attempt = attempt + 1, owner = $3, started_at = clock_timestamp(),
                      ambiguous = NOT (owner = $3 AND $4)
                WHERE event_id = $1 AND user_id = $2 AND state = 'sending'
                  AND ((owner = $3 AND $4)
                       OR ($5 AND (owner = $3 OR started_at < clock_timestamp() - make_interval(secs => $6))))
            RETURNING attempt, message_id, ambiguous"#,
            mail.event_id.as_str(),
            mail.user_id,
            self.owner,
            own_known_unaccepted,
            resend,
            self.lease.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| Claim {
            event_id: mail.event_id.clone(),
            attempt: row.attempt,
            message_id: row.message_id,
            ambiguous: row.ambiguous,
        }))
    }

    /// Why neither the insert nor the takeover claimed: the row of this event if there is
    /// one, else the one of this user. `None` when it is gone (released meanwhile).
    async fn inspect(&self, mail: &NewSentMail<'_>) -> Result<Option<Claimed>, sqlx::Error> {
        let row = sqlx::query!(
            r#"SELECT event_id = $1 AS "same_event!", user_id = $2 AS "same_user!", state, attempt,
                      started_at < clock_timestamp() - make_interval(secs => $4) AS "stale!",
                      coalesce(owner = $3, false) AS "own!"
                 FROM sent_mails
                WHERE event_id = $1 OR user_id = $2
                ORDER BY event_id = $1 DESC
                LIMIT 1"#,
            mail.event_id.as_str(),
            mail.user_id,
            self.owner,
            self.lease.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| match () {
            () if row.state == "sent" => Claimed::AlreadySent,
            // An event id reused for another user: the event was handled, as before claims.
            () if row.same_event && !row.same_user => Claimed::AlreadySent,
            // Not taken over above, so AMBIGUOUS_SEND=park (or this process's own earlier
            // attempt is in doubt, and park applies to it too).
            () if row.same_event && (row.own || row.stale) => Claimed::Ambiguous { attempt: row.attempt },
            () if row.same_event => Claimed::Busy,
            // Another event about the same user whose attempt did not finish: that event's own
            // redelivery resolves it (resend or park); this one would only duplicate it.
            () if row.stale => Claimed::AlreadySent,
            () => Claimed::Busy,
        }))
    }

    /// Records that the SMTP server accepted `claim`'s mail. One statement; the caller
    /// retries it until it succeeds. The row's owner and attempt stay those of the latest
    /// claim: they say who tried last, `sent_at` says that it went out.
    pub async fn record_sent(&self, claim: &Claim) -> Result<Recorded, StoreError> {
        let updated = self
            .bounded(async {
                sqlx::query!(
                    "UPDATE sent_mails SET state = 'sent', sent_at = clock_timestamp()
                      WHERE event_id = $1 AND state = 'sending'",
                    claim.event_id.as_str(),
                )
                .execute(&self.pool)
                .await
            })
            .await?
            .rows_affected();
        Ok(if updated == 1 { Recorded::Sent } else { Recorded::Overtaken })
    }

    /// Gives `claim` up: the SMTP server did not accept its mail. Only this attempt's own
    /// `sending` row is deleted.
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        self.bounded(async {
            sqlx::query!(
                "DELETE FROM sent_mails WHERE event_id = $1 AND owner = $2 AND attempt = $3 AND state = 'sending'",
                claim.event_id.as_str(),
                self.owner,
                claim.attempt,
            )
            .execute(&self.pool)
            .await
        })
        .await?;
        Ok(())
    }

    /// Whether the mail for `event_id` is recorded as sent (for tests and operators).
    pub async fn is_sent(&self, event_id: &str) -> Result<bool, StoreError> {
        is_sent(&self.pool, event_id).await
    }

    /// Bounds a call by the database timeout: a link that stopped answering (no reset, no
    /// error) must not hold a mail forever.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(StoreError::Sql),
            Err(_elapsed) => Err(StoreError::TimedOut(self.timeout)),
        }
    }
}

/// Whether the mail for `event_id` is recorded as sent.
pub async fn is_sent(pool: &PgPool, event_id: &str) -> Result<bool, StoreError> {
    let sent = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM sent_mails WHERE event_id = $1 AND state = 'sent') AS "sent!""#,
        event_id
    )
    .fetch_one(pool)
    .await?;
    Ok(sent)
}
