//! Connecting to the broker, and connecting again after the link breaks.
//!
//! Client and server each own one connection and a supervisor loop around it: connect with
//! exponential backoff and jitter, set up channels and topology, run until the link breaks,
//! then start over. Nothing above the supervisor needs a restart when the broker goes away.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// How long setting up channels and topology on a fresh connection may take. A request sent
/// just as a link breaks can stay unanswered, so setup never waits unbounded.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Bounds a setup step by [`SETUP_TIMEOUT`]; a step that hangs counts as a lost link.
pub(crate) async fn bounded<T>(setup: impl Future<Output = Result<T, lapin::Error>>) -> Result<T, lapin::Error> {
    tokio::time::timeout(SETUP_TIMEOUT, setup).await.unwrap_or_else(|_| {
        Err(lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "broker setup timed out")))
    })
}

/// Delays between reconnection attempts: exponential from `initial` up to `max`, with jitter
/// so that many services restarted together do not reconnect in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based), jittered into `[d/2, d]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self.initial.saturating_mul(2u32.saturating_pow(attempt.min(20)));
        let capped = exponential.min(self.max);
        capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`; kept out of `Debug` since it holds a password.
    pub url: String,
    /// Shown by the broker (`rabbitmqctl list_connections client_properties`).
    pub connection_name: String,
    pub reconnect: Backoff,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        Self { url: url.into(), connection_name: connection_name.into(), reconnect: Backoff::default() }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &"<redacted>")
            .field("connection_name", &self.connection_name)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// Opens one connection, once.
pub async fn connect(config: &BrokerConfig) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(config.connection_name.clone().into());
    Connection::connect(&config.url, properties).await
}

/// Connects, retrying with backoff until it succeeds or `shutdown` fires (then `None`).
pub(crate) async fn connect_with_backoff(config: &BrokerConfig, shutdown: &CancellationToken) -> Option<Connection> {
    let mut attempt = 0;
    loop {
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            result = connect(config) => result,
        };
        match result {
            Ok(connection) => return Some(connection),
            Err(error) => {
                let delay = config.reconnect.delay(attempt);
                tracing::warn!(connection = %config.connection_name, attempt, ?delay, error = %error, "broker connection failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Closes a connection politely, ignoring a link that is already gone.
pub(crate) async fn close(connection: &Connection) {
    if connection.status().connected()
        && let Err(error) = connection.close(200, "shutdown".into()).await
    {
        tracing::debug!(error = %error, "closing the broker connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert!(backoff.delay(0) <= Duration::from_millis(100));
        assert!(backoff.delay(0) >= Duration::from_millis(50));
        assert!(backoff.delay(3) >= Duration::from_millis(400));
        assert!(backoff.delay(30) <= Duration::from_secs(1));
    }
}
