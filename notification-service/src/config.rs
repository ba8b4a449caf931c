//! The service's configuration: the shared settings groups (declared once in
//! [`shared::config`]) plus the SMTP, mail and claim settings this service owns. Every setting
//! is an environment variable (also a `--flag`) with a default that works against the compose
//! stack and against local services; `notification-service --help` lists them all (README,
//! "Configuration").

use std::{str::FromStr, time::Duration};

use lettre::message::Mailbox;
use secrecy::SecretString;
use shared::config::{
    BrokerSettings, ConfigError, ConsumerSettings, DatabaseSettings, LogSettings, OpsSettings, RetrySettings,
    ServiceSpec, millis, secret,
};

use shared::startup::ServiceConfig;

use crate::{event_id::MessageIdDomain, mailer, sent_mails::AmbiguousSend};

/// What the binary tells the shared reader about itself.
pub const SERVICE: ServiceSpec = ServiceSpec {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    about: "Sends exactly one welcome mail per user.created event over SMTP, with retries and a dead-letter queue",
    defaults: &[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notifications"),
        // Stated although it is the shared default: a mail holds a connection only for its
        // short claim and record statements, never while SMTP runs, so 10 serve PREFETCH 16
        // (and the bench's 64) without waiting.
        ("DATABASE_MAX_CONNECTIONS", "10"),
        // Events handled at once, and the SMTP connections kept open for them.
        ("PREFETCH", "16"),
        // Eight attempts waiting 1 s, 5 s, 25 s, then 60 s: an SMTP outage of about five
        // minutes is ridden out before an event is parked.
        ("RETRY_MAX_ATTEMPTS", "8"),
        ("RETRY_INITIAL_DELAY_MS", "1000"),
        ("RETRY_MULTIPLIER", "5"),
        ("RETRY_MAX_DELAY_MS", "60000"),
    ],
    renamed: &[],
    healthcheck_var: "OPS_ADDR",
};

/// Everything [`crate::App::build`] needs. The binary reads it through
/// [`shared::startup::main`]; tests build it with [`Config::from_lookup`].
///
/// URLs may hold passwords: they are `SecretString`s, so `Debug` never shows them.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub ops: OpsSettings,
    #[command(flatten)]
    pub consumer: ConsumerSettings,
    #[command(flatten)]
    pub retry: RetrySettings,
    #[command(flatten)]
    pub log: LogSettings,
    /// SMTP server: smtp://host:port (plain), smtp://host:port?tls=required (STARTTLS), smtps://host:port (TLS); user:pass@ for AUTH
    #[arg(long = "smtp-url", env = "SMTP_URL", value_name = "URL", default_value = "smtp://127.0.0.1:1025", hide_env_values = true, value_parser = secret)]
    pub smtp_url: SecretString,
    /// Limit for connecting and for each SMTP command, in ms; a whole send gets 8 times that, at most half the claim lease
    #[arg(long = "smtp-timeout-ms", env = "SMTP_TIMEOUT_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub smtp_timeout: Duration,
    /// The sender mailbox, e.g. "Welcome <welcome@example.com>"
    #[arg(long = "mail-from", env = "MAIL_FROM", value_name = "MAILBOX", default_value = "Welcome <welcome@example.com>", value_parser = mailbox)]
    pub mail_from: Mailbox,
    /// Right-hand side of every Message-ID (<event id>@<domain>): letters, digits, '-' and inner dots
    #[arg(long = "message-id-domain", env = "MESSAGE_ID_DOMAIN", value_name = "DOMAIN", default_value = "notification-service", value_parser = message_id_domain)]
    pub message_id_domain: MessageIdDomain,
    /// The queue consumed (durable, no arguments), bound to the events exchange for user.created
    #[arg(
        long = "notification-queue",
        env = "NOTIFICATION_QUEUE",
        value_name = "NAME",
        default_value = "notification_queue"
    )]
    pub notification_queue: String,
    /// A redelivered event whose earlier send did not finish: resend it with the same Message-ID, or park it in the DLQ
    #[arg(long = "ambiguous-send", env = "AMBIGUOUS_SEND", value_name = "ACTION", default_value = "resend")]
    pub ambiguous_send: AmbiguousSend,
    /// How long another instance's unfinished send is presumed alive, in ms; at least 2 × SMTP_TIMEOUT_MS
    #[arg(long = "claim-lease-ms", env = "CLAIM_LEASE_MS", value_name = "MS", default_value = "120000", value_parser = millis)]
    pub claim_lease: Duration,
}

impl Config {
    /// Reads variables through `lookup` only (never the process environment); unset or blank
    /// variables take their default. Also checks what no single setting can check alone.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config: Self = shared::config::from_lookup(&SERVICE, lookup)?;
        ServiceConfig::validate(&config)?;
        Ok(config)
    }

    /// The bound on one whole SMTP conversation: [`mailer::ROUND_TRIPS_PER_SEND`] command
    /// timeouts, but never more than half the claim lease, so that a claim older than the lease
    /// can no longer be in the middle of its SMTP conversation.
    pub fn send_deadline(&self) -> Duration {
        self.smtp_timeout.saturating_mul(mailer::ROUND_TRIPS_PER_SEND).min(self.claim_lease / 2)
    }
}

impl ServiceConfig for Config {
    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn ops(&self) -> &OpsSettings {
        &self.ops
    }

    /// The check across settings: a claim lease shorter than two SMTP command timeouts would
    /// leave a send less time than one slow command (see [`Config::send_deadline`]).
    fn validate(&self) -> Result<(), ConfigError> {
        let minimum = self.smtp_timeout.saturating_mul(2);
        if self.claim_lease < minimum {
            let value = self.claim_lease.as_millis().to_string();
            let reason = format!("must be at least 2 × SMTP_TIMEOUT_MS ({} ms)", minimum.as_millis());
            return Err(ConfigError::invalid("CLAIM_LEASE_MS", &value, reason));
        }
        Ok(())
    }
}

fn mailbox(text: &str) -> Result<Mailbox, String> {
    Mailbox::from_str(text)
        .map_err(|error| format!("{error} (expected a mailbox such as `Welcome <welcome@example.com>`)"))
}

fn message_id_domain(text: &str) -> Result<MessageIdDomain, String> {
    MessageIdDomain::parse(text).ok_or_else(|| "expected a domain name such as `example.com`".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use secrecy::ExposeSecret;
    use shared::{RetryPolicy, telemetry::LogFormat};

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = config(&[]).unwrap();
        assert_eq!(config.broker.amqp_url.expose_secret(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(config.broker.events_exchange, "events");
        assert_eq!(config.database.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/notifications");
        assert_eq!(config.database.database_max_connections.get(), 10);
        assert_eq!(config.database.database_timeout, Duration::from_secs(2));
        assert_eq!(config.smtp_url.expose_secret(), "smtp://127.0.0.1:1025");
        assert_eq!(config.smtp_timeout, Duration::from_secs(10));
        assert_eq!(config.mail_from.to_string(), "Welcome <welcome@example.com>");
        assert_eq!(config.message_id_domain.as_str(), "notification-service");
        assert_eq!(config.notification_queue, "notification_queue");
        assert_eq!(config.ops.ops_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.ops.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.ops.worker_threads, 0);
        assert_eq!(config.consumer.prefetch.get(), 16);
        assert_eq!(
            config.retry.policy(),
            RetryPolicy {
                max_attempts: 8,
                initial_delay: Duration::from_secs(1),
                multiplier: 5,
                max_delay: Duration::from_secs(60)
            }
        );
        assert_eq!(config.log.log_format, LogFormat::Pretty);
        assert_eq!(config.ambiguous_send, AmbiguousSend::Resend);
        assert_eq!(config.claim_lease, Duration::from_secs(120));
        assert_eq!(config.send_deadline(), Duration::from_secs(60), "half the lease, less than 8 × 10 s");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let error = config(&[("PREFETCH", "0")]).unwrap_err().to_string();
        assert!(error.starts_with("PREFETCH=\"0\" is invalid"), "{error}");
        let error = config(&[("MAIL_FROM", "not a mailbox")]).unwrap_err().to_string();
        assert!(error.starts_with("MAIL_FROM=\"not a mailbox\" is invalid"), "{error}");
        let error = config(&[("MESSAGE_ID_DOMAIN", "a b")]).unwrap_err().to_string();
        assert!(error.starts_with("MESSAGE_ID_DOMAIN=\"a b\" is invalid"), "{error}");
        let error = config(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(error.starts_with("LOG_FORMAT=\"xml\" is invalid"), "{error}");
        let error = config(&[("AMBIGUOUS_SEND", "maybe")]).unwrap_err().to_string();
        assert!(error.starts_with("AMBIGUOUS_SEND=\"maybe\" is invalid"), "{error}");
        let error = config(&[("SMTP_TIMEOUT_MS", "0")]).unwrap_err().to_string();
        assert!(error.starts_with("SMTP_TIMEOUT_MS=\"0\" is invalid"), "{error}");
    }

    #[test]
    fn the_claim_lease_must_cover_two_smtp_timeouts() {
        let error = config(&[("SMTP_TIMEOUT_MS", "20000"), ("CLAIM_LEASE_MS", "30000")]).unwrap_err().to_string();
        assert!(
            error.starts_with("CLAIM_LEASE_MS=\"30000\" is invalid: must be at least 2 × SMTP_TIMEOUT_MS"),
            "{error}"
        );
        let config =
            config(&[("SMTP_TIMEOUT_MS", "2000"), ("CLAIM_LEASE_MS", "60000"), ("AMBIGUOUS_SEND", "park")]).unwrap();
        assert_eq!(config.send_deadline(), Duration::from_secs(16), "8 × 2 s, less than half the lease");
        assert_eq!(config.ambiguous_send, AmbiguousSend::Park);
    }

    #[test]
    fn debug_hides_urls_with_passwords() {
        let config = config(&[("SMTP_URL", "smtps://user:hunter2@mail.example.com")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn the_readme_table_lists_every_setting_with_its_default_in_help_order() {
        let readme = include_str!("../README.md");
        let section = readme.split("\n## Configuration").nth(1).and_then(|rest| rest.split("\n## ").next());
        let documented: Vec<(String, String)> = section
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|row| {
                let cells: Vec<&str> = row.split(" | ").map(|cell| cell.trim_matches(['|', ' ', '`'])).collect();
                (cells[0].to_owned(), cells[1].to_owned())
            })
            .collect();
        let settings: Vec<(String, String)> = shared::config::settings::<Config>(&SERVICE)
            .into_iter()
            .map(|setting| (setting.var, setting.default.unwrap_or_default()))
            .collect();
        assert_eq!(documented, settings, "README.md's configuration table against --help, in its order");
    }
}
