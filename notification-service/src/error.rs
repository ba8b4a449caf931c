//! Why a welcome mail was not sent, and the one mapping from that to the transport's
//! retry-or-park decision.

use shared::EventFailure;

use crate::{mailer::SendError, sent_mails::StoreError};

/// Every way handling one `user.created` can fail. Each variant says what the transport does
/// with the event; no variant's message contains the recipient's address.
///
/// There is no variant for "the mail was accepted but recording it failed": that is retried
/// inside the handler until it sticks, never by sending again.
#[derive(Debug, thiserror::Error)]
pub enum WelcomeMailError {
    /// Parked at once: the event's email is not a mail address.
    #[error("the recipient is not a valid mail address")]
    InvalidAddress(#[source] lettre::address::AddressError),
    /// Parked at once: the event carries no `message_id` and no id can be derived from it.
    #[error("the event has no usable id")]
    EventId(#[source] shared::event_id::EventIdError),
    /// Parked at once: the mail cannot be built (a bug, or data lettre refuses).
    #[error("the welcome mail could not be built")]
    Compose(#[source] lettre::error::Error),
    /// Retried: the claim could not be taken (database unavailable, pool exhausted). Nothing
    /// was sent.
    #[error("the sent-mails claim could not be taken")]
    Claim(#[source] StoreError),
    /// Retried: another attempt at this mail is running (in this process, or another
    /// instance's within the claim lease). Nothing was sent.
    #[error("another attempt at this welcome mail is in progress")]
    InProgress,
    /// Parked at once, as `AMBIGUOUS_SEND=park` asks: an earlier attempt did not finish, and
    /// the SMTP server may have accepted its mail.
    #[error(
        "attempt {attempt} to send this welcome mail did not finish and may have been accepted by the SMTP server; \
         not resent (AMBIGUOUS_SEND=park): check the mail log for its Message-ID, then delete its sent_mails row and \
         replay the event to resend, or mark the row sent"
    )]
    Ambiguous { attempt: i32 },
    /// Parked on a 5xx, retried otherwise (see [`SendError::is_permanent`]). The claim was
    /// released: nothing was accepted.
    #[error("sending the welcome mail failed")]
    Send(#[source] SendError),
}

impl WelcomeMailError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidAddress(_) | Self::EventId(_) | Self::Compose(_) | Self::Ambiguous { .. } => true,
            Self::Send(error) => error.is_permanent(),
            Self::Claim(_) | Self::InProgress => false,
        }
    }

    /// The `outcome` label of `welcome_mails_total` for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Ambiguous { .. } => "ambiguous_parked",
            other if other.is_permanent() => "permanent_failure",
            _ => "transient_failure",
        }
    }
}

impl From<WelcomeMailError> for EventFailure {
    fn from(error: WelcomeMailError) -> Self {
        if error.is_permanent() { EventFailure::permanent(error) } else { EventFailure::transient(error) }
    }
}
