//! The `user.created` handler: claim the event (committed), send, record; skip what was sent.
//!
//! The order is what makes database and broker faults harmless:
//! - the claim commits before the first SMTP command, and no connection is held while SMTP
//!   runs, so a database fault mid-send cannot undo anything;
//! - after the SMTP server's `250`, recording "sent" is retried in this handler (the
//!   delivery stays unacked) until it sticks, so a database fault then costs time, never a
//!   second mail;
//! - a send the SMTP server did not accept releases the claim, so the retry starts clean.

use std::time::{Duration, Instant};

use shared::{MessageContext, State, contracts::UserCreated};
use tracing::Instrument as _;

use crate::{
    error::WelcomeMailError,
    event_id::{self, EventId},
    in_flight::Attempt,
    recipient::Recipient,
    sent_mails::{Claim, Claimed, NewSentMail, Recorded},
    state::AppState,
    welcome_message,
};

/// Metric: welcome mails by `outcome`: `sent`, `ambiguous_resend` (sent again after an attempt
/// that may have been accepted), `sent_unrecorded` (accepted, but shutdown came before the
/// record stuck), `duplicate`, `in_progress`, `transient_failure`, `permanent_failure`,
/// `ambiguous_parked`. Retries and parking show in the transport's
/// `transport_messages_total{queue, outcome="retried"|"parked"}`.
pub const WELCOME_MAILS_METRIC: &str = "welcome_mails_total";
/// Metric: how long the SMTP server took to accept a welcome mail, in seconds.
pub const SEND_DURATION_METRIC: &str = "welcome_mail_send_duration_seconds";
/// Metric: failed attempts to record an accepted mail as sent (each is retried in place).
pub const RECORD_FAILURES_METRIC: &str = "welcome_mail_record_failures_total";
/// The first pause before recording "sent" again; it doubles up to [`RECORD_BACKOFF_MAX`].
const RECORD_BACKOFF_START: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to record "sent": short enough that a database
/// coming back is noticed within seconds.
const RECORD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What handling an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// The SMTP server accepted the mail and it is recorded.
    Sent,
    /// As `Sent`, after an earlier attempt that did not finish (the ambiguous case).
    AmbiguousResend,
    /// The SMTP server accepted the mail; shutdown came before the record stuck. The event
    /// is acked all the same: sending it again is what must not happen.
    SentUnrecorded,
    /// The record shows the mail went out before: nothing sent.
    Duplicate,
}

impl Handled {
    fn outcome(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::AmbiguousResend => "ambiguous_resend",
            Self::SentUnrecorded => "sent_unrecorded",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Handles one `user.created`: at most one welcome mail per event id and per user, however
/// often the event is delivered, except for the one ambiguous case (see
/// [`crate::sent_mails`]). Errors go back to the transport, which retries or parks them (see
/// [`WelcomeMailError::is_permanent`]) and logs them once with their causes.
pub async fn on_user_created(
    State(app): State<AppState>,
    context: MessageContext,
    event: UserCreated,
) -> Result<(), WelcomeMailError> {
    let event_id = EventId::of(&context, &event).map_err(WelcomeMailError::EventId)?;
    let handled = send_once(&app, &event_id, &event).await;
    let outcome = match &handled {
        Ok(handled) => handled.outcome(),
        Err(error) => error.outcome(),
    };
    metrics::counter!(WELCOME_MAILS_METRIC, "outcome" => outcome).increment(1);
    match handled {
        Ok(Handled::Sent | Handled::AmbiguousResend) => {
            tracing::info!(user_id = %event.id, event_id = %event_id, outcome, "welcome mail sent");
        }
        Ok(Handled::SentUnrecorded) => tracing::error!(
            user_id = %event.id,
            event_id = %event_id,
            outcome,
            "welcome mail sent, but shutdown came before it could be recorded; acked so that it is not sent again"
        ),
        Ok(Handled::Duplicate) => {
            tracing::info!(user_id = %event.id, event_id = %event_id, "welcome mail was sent before; skipped");
        }
        // Logged once, with its causes, by the transport that retries or parks the event.
        Err(_) => {}
    }
    handled.map(drop)
}

async fn send_once(app: &AppState, event_id: &EventId, event: &UserCreated) -> Result<Handled, WelcomeMailError> {
    let recipient = Recipient::parse(&event.name, &event.email).map_err(WelcomeMailError::InvalidAddress)?;
    let Some(mut attempt) = app.in_flight().enter(event_id) else {
        // This process is sending it right now (a duplicate publish, or a redelivery after the
        // broker link broke while the first delivery is still recording): let that finish.
        return Err(WelcomeMailError::InProgress);
    };
    let address = recipient.address.to_string();
    let message_id = event_id::message_id(event_id, app.message_id_domain());
    let mail = NewSentMail { event_id, user_id: event.id, recipient: &address, message_id: &message_id };
    let claim = match app.sent_mails().claim(&mail, attempt.earlier_unsure()).await {
        Ok(Claimed::Won(claim)) => claim,
        Ok(Claimed::AlreadySent) => return Ok(Handled::Duplicate),
        Ok(Claimed::Busy) => return Err(WelcomeMailError::InProgress),
        Ok(Claimed::Ambiguous { attempt }) => {
            tracing::warn!(user_id = %event.id, event_id = %event_id, attempt, decision = "ambiguous_park", "ambiguous_park: an earlier attempt did not finish; parking the event (AMBIGUOUS_SEND=park)");
            return Err(WelcomeMailError::Ambiguous { attempt });
        }
        Err(error) => return Err(WelcomeMailError::Claim(error)),
    };
    if claim.ambiguous {
        tracing::warn!(
            user_id = %event.id,
            event_id = %event_id,
            attempt = claim.attempt,
            decision = "ambiguous_resend",
            "ambiguous_resend: an earlier attempt did not finish and may have been accepted; resending with the same Message-ID"
        );
    }
    // Rendered with the claim's Message-ID: a takeover resends the first attempt's.
    let message = match welcome_message::render(app.mail_from(), &recipient, &claim.message_id) {
        Ok(message) => message,
        Err(error) => {
            release(app, &claim).await;
            return Err(WelcomeMailError::Compose(error));
        }
    };

    attempt.talking_to_smtp();
    let started = Instant::now();
    let smtp = shared::trace::client_span("smtp send");
    if let Err(error) = app.mailer().send(message).instrument(smtp).await {
        release(app, &claim).await;
        attempt.settled();
        return Err(WelcomeMailError::Send(error));
    }
    metrics::histogram!(SEND_DURATION_METRIC).record(started.elapsed().as_secs_f64());
    record(app, &claim, &mut attempt).await
}

/// Records `claim` as sent, retrying with backoff until it sticks or, once shutdown began,
/// until the record grace is over. Never sends again.
async fn record(app: &AppState, claim: &Claim, attempt: &mut Attempt<'_>) -> Result<Handled, WelcomeMailError> {
    let retrying = record_until_it_sticks(app, claim);
    tokio::pin!(retrying);
    let recorded = tokio::select! {
        recorded = &mut retrying => Some(recorded),
        () = app.stopping().cancelled() => tokio::time::timeout(app.record_grace(), retrying).await.ok(),
    };
    match recorded {
        Some(recorded) => {
            attempt.settled();
            if recorded == Recorded::Overtaken {
                tracing::warn!(event_id = %claim.event_id, attempt = claim.attempt, "the claim was taken over by another attempt while this one recorded its sent mail");
            }
            Ok(if claim.ambiguous { Handled::AmbiguousResend } else { Handled::Sent })
        }
        // The attempt stays "talking to SMTP" in the registry: its claim is left `sending`.
        None => Ok(Handled::SentUnrecorded),
    }
}

async fn record_until_it_sticks(app: &AppState, claim: &Claim) -> Recorded {
    let mut pause = RECORD_BACKOFF_START;
    let mut failures: u32 = 0;
    loop {
        match app.sent_mails().record_sent(claim).await {
            Ok(recorded) => {
                if failures > 0 {
                    tracing::info!(event_id = %claim.event_id, failures, "sent mail recorded after the database came back");
                }
                return recorded;
            }
            Err(error) => {
                failures += 1;
                metrics::counter!(RECORD_FAILURES_METRIC).increment(1);
                tracing::warn!(
                    event_id = %claim.event_id,
                    error = %shared::error::chain(&error),
                    failures,
                    retry_in = ?pause,
                    "recording a sent mail failed; retrying (the mail is not sent again)"
                );
            }
        }
        tokio::time::sleep(pause).await;
        pause = next_record_pause(pause);
    }
}

/// The pause before the next attempt to record "sent", after waiting `pause`: twice as long,
/// up to [`RECORD_BACKOFF_MAX`].
fn next_record_pause(pause: Duration) -> Duration {
    (pause * 2).min(RECORD_BACKOFF_MAX)
}

/// Gives the claim up after a send the SMTP server did not accept. One statement; when it
/// fails, the claim stays `sending`: this process's registry knows it is harmless, another
/// instance takes it for the ambiguous case once the lease is over (a resend of a mail that
/// was never accepted: one mail all the same).
async fn release(app: &AppState, claim: &Claim) {
    if let Err(error) = app.sent_mails().release(claim).await {
        tracing::warn!(event_id = %claim.event_id, error = %shared::error::chain(&error), "releasing a claim failed");
    }
}

#[cfg(test)]
mod tests {
    use std::{iter, time::Duration};

    use super::{RECORD_BACKOFF_MAX, RECORD_BACKOFF_START, next_record_pause};

    #[test]
    fn recording_sent_backs_off_from_50_ms_doubling_to_5_s_and_stays_there() {
        let schedule: Vec<Duration> =
            iter::successors(Some(RECORD_BACKOFF_START), |&pause| Some(next_record_pause(pause))).take(10).collect();
        let expected: Vec<Duration> =
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].into_iter().map(Duration::from_millis).collect();
        assert_eq!(schedule, expected);
        assert_eq!(next_record_pause(RECORD_BACKOFF_MAX), RECORD_BACKOFF_MAX);
    }
}
