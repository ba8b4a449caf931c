//! Configuration from environment variables, each with a documented default that works against
//! the compose stack and against services on localhost (see the README's table).

use std::{net::SocketAddr, str::FromStr, time::Duration};

use lettre::message::Mailbox;
use secrecy::SecretString;
use shared::{RetryPolicy, telemetry::LogFormat};

use crate::event_id::MessageIdDomain;

/// Everything the service needs to run. Parsed once at start; a bad value is a typed
/// [`ConfigError`] naming the variable, never a panic later.
///
/// Guarantees: URLs (which may carry passwords) are [`SecretString`]s, so `Debug` never prints
/// them; every number is range-checked (no zero prefetch, no zero attempts).
#[derive(Debug, Clone)]
pub struct Config {
    /// `AMQP_URL`: the broker.
    pub amqp_url: SecretString,
    /// `DATABASE_URL`: this service's own database (`notifications`), which must exist.
    pub database_url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`: pool size. Every in-flight mail holds one connection for
    /// its claim (see `sent_mails`), so the default is `PREFETCH + 2` (readiness checks).
    pub database_max_connections: u32,
    /// `SMTP_URL`: `smtp://host:port` (plain), `smtp://…?tls=required` (STARTTLS),
    /// `smtps://…` (TLS), optionally with `user:pass@`.
    pub smtp_url: SecretString,
    /// `SMTP_TIMEOUT_MS`: the limit for connecting and for each SMTP command.
    pub smtp_timeout: Duration,
    /// `MAIL_FROM`: the sender mailbox.
    pub mail_from: Mailbox,
    /// `MESSAGE_ID_DOMAIN`: the right-hand side of every `Message-ID`.
    pub message_id_domain: MessageIdDomain,
    /// `NOTIFICATION_QUEUE`: the queue consumed (durable, no arguments).
    pub notification_queue: String,
    /// `EVENTS_EXCHANGE`: the topic exchange the queue is bound to for `user.created`.
    pub events_exchange: String,
    /// `OPS_ADDR`: where `/healthz`, `/readyz` and `/metrics` listen.
    pub ops_addr: SocketAddr,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `PREFETCH`: events handled at once (and SMTP connections kept in the pool).
    pub prefetch: u16,
    /// `RETRY_MAX_ATTEMPTS`, `RETRY_INITIAL_DELAY_MS`, `RETRY_MULTIPLIER`, `RETRY_MAX_DELAY_MS`.
    pub retry: RetryPolicy,
    /// `SHUTDOWN_GRACE_MS`: how long in-flight mails may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be {expected}, not `{value}`")]
    Invalid { name: &'static str, value: String, expected: &'static str },
    #[error("MAIL_FROM must be a mailbox such as `Welcome <welcome@example.com>`")]
    MailFrom(#[source] lettre::address::AddressError),
    #[error("MESSAGE_ID_DOMAIN must be a domain name such as `example.com`, not `{0}`")]
    MessageIdDomain(String),
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/notifications";
pub const DEFAULT_SMTP_URL: &str = "smtp://127.0.0.1:1025";
pub const DEFAULT_MAIL_FROM: &str = "Welcome <welcome@example.com>";
pub const DEFAULT_MESSAGE_ID_DOMAIN: &str = "notification-service";
pub const DEFAULT_NOTIFICATION_QUEUE: &str = "notification_queue";
pub const DEFAULT_EVENTS_EXCHANGE: &str = "events";
pub const DEFAULT_OPS_ADDR: &str = "0.0.0.0:9090";
pub const DEFAULT_PREFETCH: u16 = 16;
pub const DEFAULT_SMTP_TIMEOUT_MS: u64 = 10_000;
/// Eight attempts waiting 1 s, 5 s, 25 s, then 60 s: an SMTP outage of about five minutes is
/// ridden out before an event is parked.
pub const DEFAULT_RETRY_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_RETRY_INITIAL_DELAY_MS: u64 = 1_000;
pub const DEFAULT_RETRY_MULTIPLIER: u32 = 5;
pub const DEFAULT_RETRY_MAX_DELAY_MS: u64 = 60_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map); unset or blank means the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let prefetch: u16 = vars.positive("PREFETCH", DEFAULT_PREFETCH, "a number from 1 to 65535")?;
        Ok(Self {
            amqp_url: vars.secret("AMQP_URL", DEFAULT_AMQP_URL),
            database_url: vars.secret("DATABASE_URL", DEFAULT_DATABASE_URL),
            database_max_connections: vars.positive(
                "DATABASE_MAX_CONNECTIONS",
                u32::from(prefetch) + 2,
                "a positive number of connections",
            )?,
            smtp_url: vars.secret("SMTP_URL", DEFAULT_SMTP_URL),
            smtp_timeout: vars.millis("SMTP_TIMEOUT_MS", DEFAULT_SMTP_TIMEOUT_MS)?,
            mail_from: Mailbox::from_str(&vars.text("MAIL_FROM", DEFAULT_MAIL_FROM)).map_err(ConfigError::MailFrom)?,
            message_id_domain: {
                let domain = vars.text("MESSAGE_ID_DOMAIN", DEFAULT_MESSAGE_ID_DOMAIN);
                MessageIdDomain::parse(&domain).ok_or(ConfigError::MessageIdDomain(domain))?
            },
            notification_queue: vars.text("NOTIFICATION_QUEUE", DEFAULT_NOTIFICATION_QUEUE),
            events_exchange: vars.text("EVENTS_EXCHANGE", DEFAULT_EVENTS_EXCHANGE),
            ops_addr: vars.parsed("OPS_ADDR", DEFAULT_OPS_ADDR, "a socket address such as 0.0.0.0:9090")?,
            log_format: vars.parsed("LOG_FORMAT", "pretty", "`pretty` or `json`")?,
            prefetch,
            retry: RetryPolicy {
                max_attempts: vars.positive("RETRY_MAX_ATTEMPTS", DEFAULT_RETRY_MAX_ATTEMPTS, "a positive number")?,
                initial_delay: vars.millis("RETRY_INITIAL_DELAY_MS", DEFAULT_RETRY_INITIAL_DELAY_MS)?,
                multiplier: vars.positive("RETRY_MULTIPLIER", DEFAULT_RETRY_MULTIPLIER, "a positive number")?,
                max_delay: vars.millis("RETRY_MAX_DELAY_MS", DEFAULT_RETRY_MAX_DELAY_MS)?,
            },
            shutdown_grace: vars.millis("SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE_MS)?,
        })
    }
}

/// The variable source with the parsing rules every field shares.
struct Vars<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn secret(&self, name: &str, default: &str) -> SecretString {
        SecretString::from(self.text(name, default))
    }

    fn parsed<T: FromStr>(&self, name: &'static str, default: &str, expected: &'static str) -> Result<T, ConfigError> {
        let value = self.text(name, default);
        value.parse().map_err(|_| ConfigError::Invalid { name, value, expected })
    }

    fn positive<T>(&self, name: &'static str, default: T, expected: &'static str) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
    {
        let Some(value) = self.get(name) else { return Ok(default) };
        match value.parse::<T>() {
            Ok(number) if number > T::default() => Ok(number),
            _ => Err(ConfigError::Invalid { name, value, expected }),
        }
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(name, default, "a positive number of milliseconds").map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = config(&[]).unwrap();
        assert_eq!(config.amqp_url.expose_secret(), DEFAULT_AMQP_URL);
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(config.smtp_url.expose_secret(), DEFAULT_SMTP_URL);
        assert_eq!(config.mail_from.to_string(), "Welcome <welcome@example.com>");
        assert_eq!(config.notification_queue, "notification_queue");
        assert_eq!(config.events_exchange, "events");
        assert_eq!(config.ops_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.prefetch, 16);
        assert_eq!(config.database_max_connections, 18);
        assert_eq!(config.retry.max_attempts, 8);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let error = config(&[("PREFETCH", "0")]).unwrap_err();
        assert!(error.to_string().starts_with("PREFETCH must be"), "{error}");
        assert!(matches!(config(&[("MAIL_FROM", "not a mailbox")]), Err(ConfigError::MailFrom(_))));
        assert!(matches!(config(&[("MESSAGE_ID_DOMAIN", "a b")]), Err(ConfigError::MessageIdDomain(_))));
        assert!(matches!(config(&[("LOG_FORMAT", "xml")]), Err(ConfigError::Invalid { name: "LOG_FORMAT", .. })));
    }

    #[test]
    fn debug_hides_urls_with_passwords() {
        let config = config(&[("SMTP_URL", "smtps://user:hunter2@mail.example.com")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
