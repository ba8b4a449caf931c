//! The service's configuration: every setting from one environment variable with a default
//! that works against the compose stack and against local services (README, "Configuration").

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

use secrecy::SecretString;
use shared::{RetryPolicy, telemetry::LogFormat};

/// Everything [`crate::App::build`] needs. Built by [`Config::from_env`] in the binary and by
/// [`Config::from_lookup`] in tests, which then override names (queues, databases) per test.
///
/// URLs may hold passwords, so they are [`SecretString`]s: `Debug` never shows them.
#[derive(Debug, Clone)]
pub struct Config {
    /// `AMQP_URL`.
    pub amqp_url: SecretString,
    /// `DATABASE_URL`: a database that exists; the service migrates it at start.
    pub database_url: SecretString,
    /// `DATABASE_POOL_SIZE`: connections at most; requests beyond it wait for one.
    pub database_pool_size: u32,
    /// `DATABASE_TIMEOUT_MS`: the bound on any database call, waiting for a connection
    /// included. Kept well under the callers' RPC timeout (5 s by default) so that a database
    /// outage is answered with an error reply instead of a caller-side timeout.
    pub database_timeout: Duration,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`.
    pub ops_addr: SocketAddr,
    /// `USER_QUEUE`: the RPC queue (durable, no arguments, as NestJS clients assert it).
    pub user_queue: String,
    /// `USER_EVENTS_QUEUE`: the projection's queue, bound to the events exchange.
    pub user_events_queue: String,
    /// `EVENTS_EXCHANGE`: the topic exchange `user.created` is published to.
    pub events_exchange: String,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `PREFETCH`: unacked messages per queue, hence handlers running at once per queue.
    pub prefetch: u16,
    /// `RETRY_MAX_ATTEMPTS`, `RETRY_INITIAL_DELAY_MS`, `RETRY_MULTIPLIER`, `RETRY_MAX_DELAY_MS`:
    /// how a failing event is retried before it is parked in `<events queue>.dlq`.
    pub retry: RetryPolicy,
    /// `SHUTDOWN_GRACE_MS`: how long in-flight handlers may run on after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// A variable that is set but cannot be used. The value is echoed only for variables that
/// hold no secret (URLs are never parsed here).
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads variables through `lookup`; unset or blank variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let defaults = RetryPolicy::default();
        Ok(Self {
            amqp_url: env.string("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").into(),
            database_url: env.string("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/users").into(),
            database_pool_size: env.positive("DATABASE_POOL_SIZE", 16)?,
            database_timeout: env.millis("DATABASE_TIMEOUT_MS", 2_000)?,
            ops_addr: env.parse("OPS_ADDR", "0.0.0.0:9090")?,
            user_queue: env.string("USER_QUEUE", "user_queue"),
            user_events_queue: env.string("USER_EVENTS_QUEUE", "user_events_queue"),
            events_exchange: env.string("EVENTS_EXCHANGE", "events"),
            log_format: env.parse("LOG_FORMAT", "pretty")?,
            prefetch: env.positive("PREFETCH", 32)?,
            retry: RetryPolicy {
                max_attempts: env.positive("RETRY_MAX_ATTEMPTS", defaults.max_attempts)?,
                initial_delay: env.millis("RETRY_INITIAL_DELAY_MS", millis_of(defaults.initial_delay))?,
                multiplier: env.positive("RETRY_MULTIPLIER", defaults.multiplier)?,
                max_delay: env.millis("RETRY_MAX_DELAY_MS", millis_of(defaults.max_delay))?,
            },
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", 10_000)?,
        })
    }
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Typed reads of variables with defaults.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn raw(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T>(&self, var: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let value = self.string(var, default);
        value.parse().map_err(|error: T::Err| ConfigError { var, reason: error.to_string(), value })
    }

    /// A whole number above zero (zero would mean "never" or "nothing" for all of these).
    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Display + PartialOrd + Default,
        T::Err: Display,
    {
        let number: T = self.parse(var, &default.to_string())?;
        if number > T::default() {
            Ok(number)
        } else {
            Err(ConfigError { var, value: number.to_string(), reason: "must be greater than 0".to_owned() })
        }
    }

    fn millis(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(var, default).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|var| vars.get(var).cloned())
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = config(&[]).unwrap();
        assert_eq!(config.amqp_url.expose_secret(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(config.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/users");
        assert_eq!(config.ops_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.user_queue, "user_queue");
        assert_eq!(config.user_events_queue, "user_events_queue");
        assert_eq!(config.events_exchange, "events");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.prefetch, 32);
        assert_eq!(config.retry, RetryPolicy::default());
        assert_eq!(config.database_timeout, Duration::from_secs(2));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn blank_variables_take_their_default() {
        assert_eq!(config(&[("USER_QUEUE", "  "), ("PREFETCH", "")]).unwrap().prefetch, 32);
    }

    #[test]
    fn variables_override_defaults() {
        let config = config(&[("PREFETCH", "8"), ("LOG_FORMAT", "json"), ("RETRY_INITIAL_DELAY_MS", "50")]).unwrap();
        assert_eq!(config.prefetch, 8);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.retry.initial_delay, Duration::from_millis(50));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let error = config(&[("PREFETCH", "many")]).unwrap_err();
        assert_eq!(error.var, "PREFETCH");
        let error = config(&[("RETRY_MAX_ATTEMPTS", "0")]).unwrap_err();
        assert_eq!(error.to_string(), "RETRY_MAX_ATTEMPTS=\"0\" is invalid: must be greater than 0");
        assert_eq!(config(&[("OPS_ADDR", "nowhere")]).unwrap_err().var, "OPS_ADDR");
    }

    #[test]
    fn debug_hides_the_urls() {
        let shown = format!("{:?}", config(&[("DATABASE_URL", "postgres://u:hunter2@db/users")]).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("guest:guest"), "{shown}");
    }
}
