//! The service's configuration, read once from environment variables.
//!
//! Every field has a documented default that works against the compose stack and against
//! local services, except `JWT_SECRET`: outside `APP_ENV=dev` a missing or short secret is a
//! startup error, never a silently weak token key. Secrets and URLs that may carry passwords
//! are [`SecretString`]s, so `{:?}` of a `Config` shows no credentials.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use secrecy::SecretString;
use shared::telemetry::LogFormat;

/// The secret used when `APP_ENV=dev` and `JWT_SECRET` is unset. Public by design: a
/// token signed with it must never be accepted by a production instance, which is why
/// production refuses to start without a secret of its own.
const DEV_JWT_SECRET: &str = "dev-only-secret-do-not-use-in-production!";

/// HS256 keys shorter than the hash output (32 bytes) weaken the MAC (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything `App::build` needs. Built by [`Config::from_env`]; tests build it with
/// [`Config::from_lookup`] and override fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HTTP_ADDR` (0.0.0.0:3000): API, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` (postgres://postgres@127.0.0.1:5432/auth); the database must exist.
    pub database_url: SecretString,
    /// `DB_MAX_CONNECTIONS` (10): pool size, including the one connection the outbox listener keeps.
    pub db_max_connections: u32,
    /// `AMQP_URL` (amqp://guest:guest@127.0.0.1:5672/%2f).
    pub amqp_url: SecretString,
    /// `AMQP_RECONNECT_MAX_MS` (10000): the longest pause between broker reconnection attempts.
    pub amqp_reconnect_max: Duration,
    /// `JWT_SECRET`: the HS256 key (at least 32 bytes); required unless `APP_ENV=dev`.
    pub jwt_secret: SecretString,
    /// `JWT_TTL_SECS` (900): access token lifetime.
    pub jwt_ttl: Duration,
    /// `RPC_TIMEOUT_MS` (5000): deadline of a `get_user` call.
    pub rpc_timeout: Duration,
    /// `USER_QUEUE` (user_queue): where `get_user` requests go.
    pub user_queue: String,
    /// `EVENTS_EXCHANGE` (events): the topic exchange `user.created` is published to.
    pub events_exchange: String,
    /// `LOG_FORMAT` (pretty): `pretty` or `json`.
    pub log_format: LogFormat,
    /// `RATE_LIMIT_PER_SECOND` (5) and `RATE_LIMIT_BURST` (10): per client IP on `/auth/*`.
    pub rate_limit: RateLimit,
    /// `ARGON2_M_COST` (19456 KiB), `ARGON2_T_COST` (2), `ARGON2_P_COST` (1): OWASP's argon2id
    /// baseline.
    pub argon2: Argon2Params,
    /// `HASH_CONCURRENCY` (the number of CPUs): password hashes computed at once; more would
    /// only add memory (m_cost each) and latency, not throughput.
    pub hash_concurrency: usize,
    /// `BODY_LIMIT_BYTES` (16384): larger request bodies are answered with 413.
    pub body_limit: usize,
    /// `OUTBOX_BATCH_SIZE` (100) and `OUTBOX_POLL_MS` (5000): see [`OutboxConfig`].
    pub outbox: OutboxConfig,
}

/// The per-client rate limit of the `/auth/*` endpoints (a token bucket per peer IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second (sustained requests per second).
    pub per_second: u32,
    /// Bucket size (requests allowed at once after a quiet period).
    pub burst: u32,
}

/// argon2id cost parameters for new hashes (existing hashes carry their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// How the outbox relay batches and how often it looks without being told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Rows claimed (and published concurrently) per transaction.
    pub batch_size: u32,
    /// The safety poll: rows are normally published on NOTIFY, this catches anything missed.
    pub poll_interval: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { batch_size: 100, poll_interval: Duration::from_secs(5) }
    }
}

/// Why the configuration cannot be used. Names the variable so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required (set APP_ENV=dev to use development defaults)")]
    Missing { var: &'static str },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests). Empty values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(move |var: &str| lookup(var).filter(|value| !value.trim().is_empty()));
        let dev = env.get("APP_ENV").is_some_and(|value| value.eq_ignore_ascii_case("dev"));
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            http_addr: env.parse("HTTP_ADDR", "0.0.0.0:3000".parse().ok())?,
            database_url: env.string("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/auth").into(),
            db_max_connections: env.parse("DB_MAX_CONNECTIONS", Some(10))?,
            amqp_url: env.string("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").into(),
            amqp_reconnect_max: Duration::from_millis(env.parse("AMQP_RECONNECT_MAX_MS", Some(10_000))?),
            jwt_secret: jwt_secret(&env, dev)?,
            jwt_ttl: Duration::from_secs(env.positive("JWT_TTL_SECS", 900)?),
            rpc_timeout: Duration::from_millis(env.positive("RPC_TIMEOUT_MS", 5000)?),
            user_queue: env.string("USER_QUEUE", "user_queue"),
            events_exchange: env.string("EVENTS_EXCHANGE", "events"),
            log_format: env.parse("LOG_FORMAT", Some(LogFormat::Pretty))?,
            rate_limit: RateLimit {
                per_second: env.positive("RATE_LIMIT_PER_SECOND", 5)?,
                burst: env.positive("RATE_LIMIT_BURST", 10)?,
            },
            argon2: Argon2Params {
                m_cost: env.positive("ARGON2_M_COST", 19_456)?,
                t_cost: env.positive("ARGON2_T_COST", 2)?,
                p_cost: env.positive("ARGON2_P_COST", 1)?,
            },
            hash_concurrency: env.positive("HASH_CONCURRENCY", cpus)?,
            body_limit: env.positive("BODY_LIMIT_BYTES", 16 * 1024)?,
            outbox: OutboxConfig {
                batch_size: env.positive("OUTBOX_BATCH_SIZE", 100)?,
                poll_interval: Duration::from_millis(env.positive("OUTBOX_POLL_MS", 5000)?),
            },
        })
    }
}

/// The address the `healthcheck` subcommand probes: `HTTP_ADDR` (`ops::healthcheck` reaches a
/// wildcard bind over loopback). Reads nothing else, so it works without the secrets the
/// service itself needs.
pub fn healthcheck_addr() -> Result<SocketAddr, ConfigError> {
    let env = Env(|var: &str| std::env::var(var).ok().filter(|value| !value.trim().is_empty()));
    env.parse("HTTP_ADDR", "0.0.0.0:3000".parse().ok())
}

fn jwt_secret(env: &Env<impl Fn(&str) -> Option<String>>, dev: bool) -> Result<SecretString, ConfigError> {
    const VAR: &str = "JWT_SECRET";
    let secret = match env.get(VAR) {
        Some(secret) => secret,
        None if dev => DEV_JWT_SECRET.to_owned(),
        None => return Err(ConfigError::Missing { var: VAR }),
    };
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError::Invalid {
            var: VAR,
            reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes, got {}", secret.len()),
        });
    }
    Ok(secret.into())
}

/// Variable lookup with typed parsing and errors that name the variable.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T>(&self, var: &'static str, default: Option<T>) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match (self.get(var), default) {
            (Some(text), _) => text
                .trim()
                .parse()
                .map_err(|error: T::Err| ConfigError::Invalid { var, reason: format!("`{text}`: {error}") }),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(ConfigError::Missing { var }),
        }
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(var, Some(default))?;
        if value <= T::default() {
            return Err(ConfigError::Invalid { var, reason: "must be greater than zero".into() });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(move |var| map.get(var).cloned())
    }

    #[test]
    fn production_requires_a_jwt_secret() {
        assert!(matches!(config(&[]), Err(ConfigError::Missing { var: "JWT_SECRET" })));
    }

    #[test]
    fn dev_has_defaults_for_everything() {
        let config = config(&[("APP_ENV", "dev")]).unwrap();
        assert_eq!(config.http_addr.port(), 3000);
        assert_eq!(config.argon2, Argon2Params { m_cost: 19_456, t_cost: 2, p_cost: 1 });
        assert_eq!(config.jwt_ttl, Duration::from_secs(900));
        assert_eq!(config.user_queue, "user_queue");
        assert_eq!(config.events_exchange, "events");
        assert_eq!(config.body_limit, 16 * 1024);
    }

    #[test]
    fn short_secrets_are_rejected_even_in_dev() {
        let error = config(&[("APP_ENV", "dev"), ("JWT_SECRET", "short")]).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { var: "JWT_SECRET", .. }));
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let secret = "x".repeat(32);
        let error = config(&[("JWT_SECRET", &secret), ("RPC_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(error.to_string().starts_with("RPC_TIMEOUT_MS is invalid"), "{error}");
        let error = config(&[("JWT_SECRET", &secret), ("RATE_LIMIT_BURST", "0")]).unwrap_err();
        assert!(error.to_string().starts_with("RATE_LIMIT_BURST is invalid"), "{error}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let config = config(&[("JWT_SECRET", secret), ("AMQP_URL", "amqp://user:hunter2@rabbit:5672/%2f")]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(secret) && !debug.contains("hunter2"), "{debug}");
        assert_eq!(config.jwt_secret.expose_secret(), secret);
    }
}
