//! The service's configuration: every setting is an environment variable (and a `--flag`)
//! declared once with its default and one line of meaning, so `auth-service --help` lists
//! them all. The broker, database and log settings are the shared groups of
//! [`shared::config`]; the others belong to this service.
//!
//! Every setting has a default that works against the compose stack and local services,
//! except the token key: outside `APP_ENV=dev` a missing or short `JWT_SECRET` is a startup
//! error ([`JwtSettings::key`]), never a silently weak key. Secrets and URLs that may carry
//! passwords are [`SecretString`]s, so `{:?}` of a `Config` shows no credentials.

use std::{
    net::SocketAddr,
    num::{NonZeroU64, NonZeroUsize},
    time::Duration,
};

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use shared::{
    config::{BrokerSettings, ConfigError, DatabaseSettings, LogSettings, OpsSettings, ServiceSpec, millis, secret},
    startup::ServiceConfig,
};

/// Where the API listens unless `HTTP_ADDR` says otherwise.
const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:3000";

/// What `main` and `--help` know about this binary.
pub const SERVICE: ServiceSpec = ServiceSpec {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    about: env!("CARGO_PKG_DESCRIPTION"),
    defaults: &[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/auth"),
        // A signup waits this long for a pooled connection before it is answered 503, as
        // before the shared settings existed.
        ("DATABASE_TIMEOUT_MS", "5000"),
        ("HTTP_ADDR", DEFAULT_HTTP_ADDR),
    ],
    renamed: &[("DB_MAX_CONNECTIONS", "DATABASE_MAX_CONNECTIONS")],
    // Like the other services: `healthcheck` probes /healthz on the operations port.
    healthcheck_var: "OPS_ADDR",
};

/// The key used when `APP_ENV=dev` and no key is configured. Public by design: a token signed
/// with it must never be accepted by a production instance, which is why production refuses
/// to start without a key of its own.
const DEV_JWT_SECRET: &str = "dev-only-secret-do-not-use-in-production!";

/// HS256 keys shorter than the hash output (32 bytes) weaken the MAC (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything `App::build` needs. Read by `shared::startup::main`; tests build it with
/// [`Config::from_lookup`] and override fields.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address of the public HTTP port: the API, /healthz and /openapi.json
    #[arg(long = "http-addr", env = "HTTP_ADDR", value_name = "ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub ops: OpsSettings,
    #[command(flatten)]
    pub overload: Overload,
    #[command(flatten)]
    pub login_throttle: LoginThrottle,
    #[command(flatten)]
    pub jwt: JwtSettings,
    /// Deadline of a get_user call to the user-service, in ms
    #[arg(long = "rpc-timeout-ms", env = "RPC_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub rpc_timeout: Duration,
    /// Queue the get_user requests are sent to (the user-service consumes it)
    #[arg(long = "user-queue", env = "USER_QUEUE", value_name = "NAME", default_value = "user_queue")]
    pub user_queue: String,
    #[command(flatten)]
    pub rate_limit: RateLimit,
    #[command(flatten)]
    pub argon2: Argon2Params,
    /// Password hashes computed at once, each on a dedicated thread (auto: one per CPU)
    #[arg(long = "hash-concurrency", env = "HASH_CONCURRENCY", value_name = "N", default_value = "auto", value_parser = hash_concurrency)]
    pub hash_concurrency: usize,
    /// Largest request body, in bytes; larger ones are answered 413
    #[arg(long = "body-limit-bytes", env = "BODY_LIMIT_BYTES", value_name = "BYTES", default_value = "16384", value_parser = at_least_one)]
    pub body_limit: usize,
    #[command(flatten)]
    pub outbox: OutboxConfig,
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// The access-token key and lifetime.
#[derive(Debug, Clone, Args)]
pub struct JwtSettings {
    /// Deployment environment; dev allows starting without a JWT key (a built-in, public one)
    #[arg(long = "app-env", env = "APP_ENV", value_name = "ENV", default_value = "production")]
    pub app_env: String,
    /// HS256 key of the access tokens, at least 32 bytes (or a file named by JWT_SECRET_FILE); required unless APP_ENV=dev
    #[arg(long = "jwt-secret", env = "JWT_SECRET", value_name = "SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,
    /// Access token lifetime, in seconds
    #[arg(long = "jwt-ttl-secs", env = "JWT_TTL_SECS", value_name = "SECS", default_value = "900", value_parser = seconds)]
    pub jwt_ttl: Duration,
    /// The `iss` claim of issued tokens; tokens with another issuer are rejected
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER", value_name = "NAME", default_value = "auth-service", value_parser = claim_value)]
    pub jwt_issuer: String,
    /// The `aud` claim of issued tokens; tokens for another audience are rejected
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE", value_name = "NAME", default_value = "api", value_parser = claim_value)]
    pub jwt_audience: String,
}

/// What the public port accepts at once and for how long, and how much hashing may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Overload {
    /// Password hashes that may wait for a hashing thread (auto: 4 per thread); beyond it signup and login answer 503 at once
    #[arg(long = "hash-queue-capacity", env = "HASH_QUEUE_CAPACITY", value_name = "N", default_value = "auto", value_parser = hash_queue_capacity)]
    pub hash_queue_capacity: QueueCapacity,
    /// Longest time a request on the public port may take, in ms; then it is answered 503
    #[arg(long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub request_timeout: Duration,
    /// Requests handled at once on the public port; more are answered 503 at once
    #[arg(long = "max-in-flight", env = "MAX_IN_FLIGHT", value_name = "N", default_value = "512", value_parser = at_least_one)]
    pub max_in_flight: usize,
}

/// `HASH_QUEUE_CAPACITY`: a number, or per hashing thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueCapacity {
    /// `auto`: [`QueueCapacity::PER_THREAD`] per hashing thread.
    Auto,
    Fixed(usize),
}

impl QueueCapacity {
    /// Waiting hashes per hashing thread with `auto`: a queued request then waits at most
    /// about four hash times, so accepted requests stay within a small multiple of an
    /// unloaded one while a short burst is still absorbed.
    pub const PER_THREAD: usize = 4;

    /// The capacity for `threads` hashing threads.
    pub fn resolve(self, threads: usize) -> usize {
        match self {
            Self::Auto => threads.max(1) * Self::PER_THREAD,
            Self::Fixed(capacity) => capacity,
        }
    }
}

/// Failed logins counted per account (the email, trimmed and lower-cased, whether or not an
/// account has it) and per client IP; past the limit, login answers 429 until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct LoginThrottle {
    /// Failed logins for one email within the window before further logins for it are answered 429
    #[arg(long = "login-failures-per-account", env = "LOGIN_FAILURES_PER_ACCOUNT", value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_account: u32,
    /// Failed logins from one client IP within the window before its further logins are answered 429
    #[arg(long = "login-failures-per-ip", env = "LOGIN_FAILURES_PER_IP", value_name = "N", default_value = "20", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_ip: u32,
    /// The failed-login window, in seconds, counted from the first failure
    #[arg(long = "login-failure-window-secs", env = "LOGIN_FAILURE_WINDOW_SECS", value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub window: Duration,
}

/// The per-client rate limit of the `/auth/*` endpoints (a token bucket per peer IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct RateLimit {
    /// Sustained /auth/* requests per second per client IP (tokens added to its bucket)
    #[arg(long = "rate-limit-per-second", env = "RATE_LIMIT_PER_SECOND", value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_second: u32,
    /// /auth/* requests per client IP allowed at once after a quiet period (the bucket size)
    #[arg(long = "rate-limit-burst", env = "RATE_LIMIT_BURST", value_name = "N", default_value = "10", value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
}

/// argon2id cost parameters for new hashes (existing hashes carry their own); the defaults are
/// OWASP's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Argon2Params {
    /// argon2id memory per password hash, in KiB
    #[arg(long = "argon2-m-cost", env = "ARGON2_M_COST", value_name = "KIB", default_value = "19456", value_parser = clap::value_parser!(u32).range(1..))]
    pub m_cost: u32,
    /// argon2id iterations per password hash
    #[arg(long = "argon2-t-cost", env = "ARGON2_T_COST", value_name = "N", default_value = "2", value_parser = clap::value_parser!(u32).range(1..))]
    pub t_cost: u32,
    /// argon2id lanes per password hash
    #[arg(long = "argon2-p-cost", env = "ARGON2_P_COST", value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub p_cost: u32,
}

/// How the outbox relay batches and how often it looks without being told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct OutboxConfig {
    /// Outbox rows the relay claims, and publishes concurrently, per transaction
    #[arg(long = "outbox-batch-size", env = "OUTBOX_BATCH_SIZE", value_name = "N", default_value = "100", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// The relay's safety poll, in ms (it normally wakes on the outbox NOTIFY)
    #[arg(long = "outbox-poll-ms", env = "OUTBOX_POLL_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub poll_interval: Duration,
    /// Published outbox rows are deleted this long after publication, in seconds (the relay prunes at each poll)
    #[arg(long = "outbox-retention-secs", env = "OUTBOX_RETENTION_SECS", value_name = "SECS", default_value = "604800", value_parser = seconds)]
    pub retention: Duration,
}

impl Config {
    /// Reads variables through `lookup` only (a map in tests; unset or blank variables take
    /// their default), then checks the token key as the service will at start.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config: Self = shared::config::from_lookup(&SERVICE, lookup)?;
        config.validate()?;
        Ok(config)
    }
}

impl ServiceConfig for Config {
    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn ops(&self) -> &OpsSettings {
        &self.ops
    }

    /// The token key rule, checked before the service starts (exit code 2 like any other
    /// configuration error).
    fn validate(&self) -> Result<(), ConfigError> {
        self.jwt.key().map(drop)
    }
}

impl JwtSettings {
    /// Whether `APP_ENV` is `dev` (any case).
    pub fn is_dev(&self) -> bool {
        self.app_env.trim().eq_ignore_ascii_case("dev")
    }

    /// Whether tokens are signed with the public development key (no key configured, dev).
    pub fn uses_dev_key(&self) -> bool {
        self.jwt_secret.is_none() && self.is_dev()
    }

    /// The token key: `JWT_SECRET` (or the content of the file `JWT_SECRET_FILE` names, read by
    /// `shared::config` like every secret's), or with `APP_ENV=dev` and no key, the development
    /// key. Errors name the variable and never show the key.
    pub fn key(&self) -> Result<SecretString, ConfigError> {
        let key = match &self.jwt_secret {
            Some(key) => key.clone(),
            None if self.is_dev() => return Ok(SecretString::from(DEV_JWT_SECRET)),
            None => {
                return Err(ConfigError::Missing {
                    var: "JWT_SECRET".to_owned(),
                    reason: format!(
                        "an HS256 key of at least {MIN_JWT_SECRET_BYTES} bytes (or JWT_SECRET_FILE naming a file \
                         holding it; APP_ENV=dev uses a built-in development key)"
                    ),
                });
            }
        };
        let length = key.expose_secret().len();
        if length < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                var: "JWT_SECRET".to_owned(),
                value: "(hidden)".to_owned(),
                reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes, got {length}"),
            });
        }
        Ok(key)
    }
}

/// Seconds, at least 1.
fn seconds(text: &str) -> Result<Duration, String> {
    positive(text, "seconds").map(Duration::from_secs)
}

fn positive(text: &str, unit: &str) -> Result<u64, String> {
    text.trim()
        .parse::<NonZeroU64>()
        .map(NonZeroU64::get)
        .map_err(|error| format!("{error} (expected {unit}, at least 1)"))
}

/// A JWT claim value: not blank.
fn claim_value(text: &str) -> Result<String, String> {
    let value = text.trim();
    if value.is_empty() { Err("must not be blank".to_owned()) } else { Ok(value.to_owned()) }
}

/// `auto` or a count (0: nothing waits, only the running hashes are accepted).
fn hash_queue_capacity(text: &str) -> Result<QueueCapacity, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(QueueCapacity::Auto);
    }
    text.trim()
        .parse::<usize>()
        .map(QueueCapacity::Fixed)
        .map_err(|error| format!("{error} (expected a count, or auto)"))
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    text.trim().parse::<NonZeroUsize>().map(NonZeroUsize::get).map_err(|error| format!("{error} (expected at least 1)"))
}

/// `auto` (one per CPU) or a count of at least 1. More hashes at once than cores would only
/// add memory (`m_cost` each) and latency, not throughput.
fn hash_concurrency(text: &str) -> Result<usize, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    }
    at_least_one(text).map_err(|error| format!("{error}, or auto"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use clap::{Command, CommandFactory as _};

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(move |var| map.get(var).cloned())
    }

    #[test]
    fn production_requires_a_jwt_secret() {
        let error = config(&[]).unwrap_err();
        assert!(matches!(&error, ConfigError::Missing { var, .. } if var == "JWT_SECRET"), "{error}");
        assert!(error.to_string().starts_with("JWT_SECRET is required"), "{error}");
    }

    #[test]
    fn dev_has_defaults_for_everything() {
        let config = config(&[("APP_ENV", "dev")]).unwrap();
        assert!(config.jwt.uses_dev_key());
        assert_eq!(config.http_addr.port(), 3000);
        assert_eq!(config.argon2, Argon2Params { m_cost: 19_456, t_cost: 2, p_cost: 1 });
        assert_eq!(config.jwt.jwt_ttl, Duration::from_secs(900));
        assert_eq!(config.rpc_timeout, Duration::from_secs(5));
        assert_eq!(config.user_queue, "user_queue");
        assert_eq!(config.broker.events_exchange, "events");
        assert_eq!(config.body_limit, 16 * 1024);
        assert_eq!(config.rate_limit, RateLimit { per_second: 5, burst: 10 });
        assert_eq!(
            config.outbox,
            OutboxConfig {
                batch_size: 100,
                poll_interval: Duration::from_secs(5),
                retention: Duration::from_secs(7 * 24 * 3600)
            }
        );
        assert_eq!(config.ops.ops_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.overload.hash_queue_capacity, QueueCapacity::Auto);
        assert_eq!(QueueCapacity::Auto.resolve(2), 8);
        assert_eq!(config.overload.request_timeout, Duration::from_secs(10));
        assert_eq!(config.overload.max_in_flight, 512);
        assert_eq!(
            config.login_throttle,
            LoginThrottle { per_account: 5, per_ip: 20, window: Duration::from_secs(60) }
        );
        assert_eq!((config.jwt.jwt_issuer.as_str(), config.jwt.jwt_audience.as_str()), ("auth-service", "api"));
        assert_eq!(config.database.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/auth");
        assert_eq!(config.database.database_max_connections.get(), 10);
        assert_eq!(config.database.database_timeout, Duration::from_secs(5));
        assert!(config.hash_concurrency >= 1);
    }

    #[test]
    fn short_secrets_are_rejected_even_in_dev_without_showing_them() {
        let error = config(&[("APP_ENV", "dev"), ("JWT_SECRET", "short-secret")]).unwrap_err();
        assert!(matches!(&error, ConfigError::Invalid { var, .. } if var == "JWT_SECRET"), "{error}");
        assert!(!error.to_string().contains("short-secret"), "{error}");
    }

    #[test]
    fn the_key_can_come_from_a_file() {
        let key = "k".repeat(MIN_JWT_SECRET_BYTES);
        let path = std::env::temp_dir().join(format!("auth-jwt-key-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, format!("{key}\n")).unwrap();
        let file = path.to_str().unwrap();

        let read = config(&[("JWT_SECRET_FILE", file)]).unwrap();
        assert!(!read.jwt.uses_dev_key());
        assert_eq!(read.jwt.key().unwrap().expose_secret(), key);
        std::fs::write(&path, "short\n").unwrap();
        let short = config(&[("JWT_SECRET_FILE", file), ("APP_ENV", "dev")]).unwrap_err();
        assert!(short.to_string().starts_with("JWT_SECRET=(hidden) is invalid"), "{short}");
        std::fs::remove_file(&path).unwrap();
        let missing = config(&[("JWT_SECRET_FILE", file)]).unwrap_err();
        assert!(missing.to_string().starts_with("JWT_SECRET_FILE="), "{missing}");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let secret = "x".repeat(32);
        let error = config(&[("JWT_SECRET", &secret), ("RPC_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(error.to_string().starts_with("RPC_TIMEOUT_MS=\"soon\" is invalid"), "{error}");
        let error = config(&[("JWT_SECRET", &secret), ("RATE_LIMIT_BURST", "0")]).unwrap_err();
        assert!(error.to_string().starts_with("RATE_LIMIT_BURST=\"0\" is invalid"), "{error}");
        let error = config(&[("JWT_SECRET", &secret), ("HASH_CONCURRENCY", "0")]).unwrap_err();
        assert!(error.to_string().starts_with("HASH_CONCURRENCY=\"0\" is invalid"), "{error}");
        let error = config(&[("JWT_SECRET", &secret), ("HASH_QUEUE_CAPACITY", "-1")]).unwrap_err();
        assert!(error.to_string().starts_with("HASH_QUEUE_CAPACITY=\"-1\" is invalid"), "{error}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let config = config(&[("JWT_SECRET", secret), ("AMQP_URL", "amqp://user:hunter2@rabbit:5672/%2f")]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(secret) && !debug.contains("hunter2"), "{debug}");
        assert_eq!(config.jwt.key().unwrap().expose_secret(), secret);
    }

    /// `Config` as a standalone command, for its help text.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn help_lists_every_variable() {
        let mut command: Command = Cli::command();
        let help = command.render_long_help().to_string();
        for var in [
            "HTTP_ADDR",
            "OPS_ADDR",
            "SHUTDOWN_GRACE_MS",
            "HASH_QUEUE_CAPACITY",
            "REQUEST_TIMEOUT_MS",
            "MAX_IN_FLIGHT",
            "LOGIN_FAILURES_PER_ACCOUNT",
            "LOGIN_FAILURES_PER_IP",
            "LOGIN_FAILURE_WINDOW_SECS",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "OUTBOX_RETENTION_SECS",
            "APP_ENV",
            "JWT_SECRET",
            "JWT_TTL_SECS",
            "RPC_TIMEOUT_MS",
            "USER_QUEUE",
            "RATE_LIMIT_PER_SECOND",
            "RATE_LIMIT_BURST",
            "ARGON2_M_COST",
            "ARGON2_T_COST",
            "ARGON2_P_COST",
            "HASH_CONCURRENCY",
            "BODY_LIMIT_BYTES",
            "OUTBOX_BATCH_SIZE",
            "OUTBOX_POLL_MS",
            "AMQP_URL",
            "AMQP_RECONNECT_MAX_MS",
            "EVENTS_EXCHANGE",
            "DATABASE_URL",
            "DATABASE_MAX_CONNECTIONS",
            "DATABASE_TIMEOUT_MS",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(help.contains(&format!("env: {var}")), "{var} missing from:\n{help}");
        }
    }
}
