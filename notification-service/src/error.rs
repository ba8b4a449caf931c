//! Why a welcome mail was not sent, and the one mapping from that to the transport's
//! retry-or-park decision.

use shared::EventFailure;

use crate::mailer::SendError;

/// Every way handling one `user.created` can fail. Each variant says what the transport does
/// with the event; no variant's message contains the recipient's address.
#[derive(Debug, thiserror::Error)]
pub enum WelcomeMailError {
    /// Parked at once: the event's email is not a mail address.
    #[error("the recipient is not a valid mail address")]
    InvalidAddress(#[source] lettre::address::AddressError),
    /// Parked at once: the mail cannot be built (a bug, or data lettre refuses).
    #[error("the welcome mail could not be built")]
    Compose(#[source] lettre::error::Error),
    /// Retried: the claim could not be taken (database unavailable, pool exhausted).
    #[error("the sent-mails record is unavailable")]
    Claim(#[source] sqlx::Error),
    /// Parked on a 5xx, retried otherwise (see [`SendError::is_permanent`]).
    #[error("sending the welcome mail failed")]
    Send(#[source] SendError),
    /// Retried, at the risk of a second mail: the SMTP server accepted it but recording that
    /// failed, so the claim rolled back. The duplicate carries the same `Message-ID`.
    #[error("the mail was accepted but recording it failed; a retry may send it again")]
    Record(#[source] sqlx::Error),
}

impl WelcomeMailError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidAddress(_) | Self::Compose(_) => true,
            Self::Send(error) => error.is_permanent(),
            Self::Claim(_) | Self::Record(_) => false,
        }
    }

    /// The `outcome` label of `welcome_mails_total` for this failure.
    pub fn outcome(&self) -> &'static str {
        if self.is_permanent() { "permanent_failure" } else { "transient_failure" }
    }
}

impl From<WelcomeMailError> for EventFailure {
    fn from(error: WelcomeMailError) -> Self {
        if error.is_permanent() { EventFailure::permanent(error) } else { EventFailure::transient(error) }
    }
}
