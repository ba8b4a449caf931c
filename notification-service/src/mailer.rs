//! The SMTP side: lettre's pooled async transport, with timeouts, and the one place that
//! decides which SMTP failures are worth retrying.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::{self, PoolConfig},
};

/// A whole send is at most this many SMTP round trips (pool check, connect and greeting,
/// EHLO, AUTH, MAIL, RCPT, DATA, end of data); lettre's timeout bounds each one, this bounds
/// the sum, so a server that answers slowly but steadily cannot hold a mail forever.
pub const ROUND_TRIPS_PER_SEND: u32 = 8;
/// Readiness probes answer within ops' 2 s check budget.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pooled connections idle longer than this are closed (servers drop idle clients anyway).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled SMTP transport to `SMTP_URL`. Cheap to clone (the pool is shared).
///
/// Guarantees: connecting and every SMTP command are bounded by the configured timeout, a
/// whole send by [`ROUND_TRIPS_PER_SEND`] times that (or the shorter
/// [`Mailer::send_deadline`]); broken pooled connections are
/// replaced, not reused; a failure comes back classified as [`SendError::Rejected`]
/// (permanent) or [`SendError::Deferred`] / [`SendError::TimedOut`] (worth retrying).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    send_deadline: Duration,
}

/// Why a mail was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A 5xx answer: the server will never take this mail.
    #[error("the SMTP server rejected the mail")]
    Rejected(#[source] smtp::Error),
    /// A 4xx answer, or no usable connection (refused, reset, TLS, timeout of one command).
    #[error("the SMTP server did not take the mail now")]
    Deferred(#[source] smtp::Error),
    /// The conversation as a whole took too long.
    #[error("sending took longer than {0:?}")]
    TimedOut(Duration),
}

impl SendError {
    /// Whether sending the same mail again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

impl Mailer {
    /// A transport to `url` (see [`crate::Config::smtp_url`]), keeping up to `pool_size` idle
    /// connections. Must be called inside a Tokio runtime (the pool runs a cleanup task).
    /// Connects lazily: an unreachable server is not an error here.
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Self, smtp::Error> {
        let pool = PoolConfig::new().max_size(pool_size).idle_timeout(POOL_IDLE_TIMEOUT);
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.timeout(Some(timeout)).pool_config(pool).build();
        Ok(Self { transport, send_deadline: timeout.saturating_mul(ROUND_TRIPS_PER_SEND) })
    }

    /// Bounds a whole send by `deadline` instead (the service keeps it under half the claim
    /// lease, see `Config::send_deadline`).
    #[must_use]
    pub fn send_deadline(mut self, deadline: Duration) -> Self {
        self.send_deadline = deadline;
        self
    }

    /// Sends `message` to the recipients in its headers; returns once the server accepted it.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match tokio::time::timeout(self.send_deadline, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) if error.is_permanent() => Err(SendError::Rejected(error)),
            Ok(Err(error)) => Err(SendError::Deferred(error)),
            Err(_elapsed) => Err(SendError::TimedOut(self.send_deadline)),
        }
    }

    /// Whether the server answers a NOOP now (through the pool), within a short bound.
    pub async fn is_reachable(&self) -> bool {
        matches!(tokio::time::timeout(PROBE_TIMEOUT, self.transport.test_connection()).await, Ok(Ok(true)))
    }

    /// Says QUIT on the pooled connections; sends after this fail.
    pub async fn shutdown(&self) {
        self.transport.shutdown().await;
    }
}
