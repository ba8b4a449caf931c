//! The `user.created` handler: claim the event, render, send, record; skip what was sent.

use std::time::Instant;

use shared::{MessageContext, State, contracts::UserCreated};

use crate::{
    app::AppState,
    error::WelcomeMailError,
    event_id::EventId,
    recipient::Recipient,
    sent_mails::{self, NewSentMail},
    welcome_message,
};

/// Metric: welcome mails by `outcome` (`sent`, `duplicate`, `transient_failure`,
/// `permanent_failure`). Retries and parking show in the transport's
/// `transport_messages_total{queue, outcome="retried"|"parked"}`.
pub const WELCOME_MAILS_METRIC: &str = "welcome_mails_total";
/// Metric: how long the SMTP server took to accept a welcome mail, in seconds.
pub const SEND_DURATION_METRIC: &str = "welcome_mail_send_duration_seconds";

/// What handling an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// The SMTP server accepted the mail and the record committed.
    Sent,
    /// The record shows the mail went out before: nothing sent.
    Duplicate,
}

/// Handles one `user.created`: at most one welcome mail per event id and per user, however
/// often the event is delivered. Errors go back to the transport, which retries or parks
/// them (see [`WelcomeMailError::is_permanent`]) and logs them once with their causes.
pub async fn on_user_created(
    State(app): State<AppState>,
    context: MessageContext,
    event: UserCreated,
) -> Result<(), WelcomeMailError> {
    let event_id = EventId::of(&context, &event);
    let handled = send_once(&app, &event_id, &event).await;
    let outcome = match &handled {
        Ok(Handled::Sent) => "sent",
        Ok(Handled::Duplicate) => "duplicate",
        Err(error) => error.outcome(),
    };
    metrics::counter!(WELCOME_MAILS_METRIC, "outcome" => outcome).increment(1);
    match handled {
        Ok(Handled::Sent) => tracing::info!(user_id = %event.id, event_id = %event_id, "welcome mail sent"),
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
    let message_id = event_id.message_id(app.message_id_domain());
    let message =
        welcome_message::render(app.mail_from(), &recipient, &message_id).map_err(WelcomeMailError::Compose)?;
    let address = recipient.address.to_string();
    let record = NewSentMail { event_id, user_id: event.id, recipient: &address, message_id: &message_id };
    let Some(claim) = sent_mails::claim(app.pool(), &record).await.map_err(WelcomeMailError::Claim)? else {
        return Ok(Handled::Duplicate);
    };
    let started = Instant::now();
    if let Err(error) = app.mailer().send(message).await {
        claim.release().await;
        return Err(WelcomeMailError::Send(error));
    }
    metrics::histogram!(SEND_DURATION_METRIC).record(started.elapsed().as_secs_f64());
    claim.mark_sent().await.map_err(WelcomeMailError::Record)?;
    Ok(Handled::Sent)
}
