//! What every handler call shares: the claim table, the SMTP transport, the mail settings,
//! the events in flight and the shutdown signal. Built by [`crate::app`], read by
//! [`crate::welcome_mail`]; depends on neither.

use std::{sync::Arc, time::Duration};

use lettre::message::Mailbox;
use shared::CancellationToken;
use sqlx::PgPool;

use crate::{event_id::MessageIdDomain, in_flight::InFlight, mailer::Mailer, sent_mails::SentMails};

/// The handlers' state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    sent_mails: SentMails,
    mailer: Mailer,
    mail_from: Mailbox,
    message_id_domain: MessageIdDomain,
    in_flight: InFlight,
    stopping: CancellationToken,
    record_grace: Duration,
}

/// The parts [`AppState::new`] takes.
pub struct Parts {
    pub sent_mails: SentMails,
    pub mailer: Mailer,
    pub mail_from: Mailbox,
    pub message_id_domain: MessageIdDomain,
    /// Fires when the service begins to shut down.
    pub stopping: CancellationToken,
    /// How long, once shutdown began, a mail the SMTP server accepted may still try to be
    /// recorded (within the shutdown grace, so that its event is then acked, not aborted).
    pub record_grace: Duration,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let Parts { sent_mails, mailer, mail_from, message_id_domain, stopping, record_grace } = parts;
        Self(Arc::new(Shared {
            sent_mails,
            mailer,
            mail_from,
            message_id_domain,
            in_flight: InFlight::default(),
            stopping,
            record_grace,
        }))
    }

    pub fn sent_mails(&self) -> &SentMails {
        &self.0.sent_mails
    }

    pub fn pool(&self) -> &PgPool {
        self.0.sent_mails.pool()
    }

    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    pub fn mail_from(&self) -> &Mailbox {
        &self.0.mail_from
    }

    pub fn message_id_domain(&self) -> &MessageIdDomain {
        &self.0.message_id_domain
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.0.in_flight
    }

    pub fn stopping(&self) -> &CancellationToken {
        &self.0.stopping
    }

    pub fn record_grace(&self) -> Duration {
        self.0.record_grace
    }
}
