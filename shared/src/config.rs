//! One configuration reader for every service: settings are environment variables (each also a
//! `--flag`), declared once here with their default and one line of meaning, so that
//! `<service> --help` lists all of them and every service spells a concept the same way.
//!
//! A service's `Config` is a `clap::Args` struct that flattens the groups it uses
//! ([`BrokerSettings`], [`DatabaseSettings`], [`OpsSettings`], [`ConsumerSettings`],
//! [`RetrySettings`], [`LogSettings`]) next to its own fields. Per-service defaults (the
//! database name, a longer retry schedule) are set by [`ServiceSpec::defaults`] without
//! redeclaring the setting. [`from_env`] reads the process (and answers the `healthcheck`
//! subcommand before validating anything else); [`from_lookup`] reads a map, for tests.
//!
//! Errors name the variable, the value (unless it may hold a secret) and why it was rejected.

use std::{
    convert::Infallible,
    ffi::OsString,
    net::SocketAddr,
    num::{NonZeroU16, NonZeroU32, NonZeroU64},
    time::Duration,
};

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, error::ContextKind, error::ErrorKind};
use secrecy::SecretString;

use crate::{
    broker_urls::{BrokerUrls, BrokerUrlsError},
    connection::{Backoff, BrokerConfig},
    retry::RetryPolicy,
    server::ServerConfig,
    telemetry::LogFormat,
    topology::{DlqLimits, QueueType},
};

/// The default broker: the machine's own RabbitMQ, as on a developer laptop or CI.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// What a binary tells [`from_env`] about itself.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// The binary and package name, also the AMQP connection name and the `x-service` header.
    pub name: &'static str,
    /// `--version`.
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Defaults that differ from the shared ones, by variable name (`("DATABASE_URL", "…/users")`).
    pub defaults: &'static [(&'static str, &'static str)],
    /// Old variable names still read, each with its new name; using one logs a deprecation warning.
    pub renamed: &'static [(&'static str, &'static str)],
    /// The variable holding the address `healthcheck` probes (`OPS_ADDR`, or the HTTP port's).
    pub healthcheck_var: &'static str,
}

/// What the binary was asked to do.
#[derive(Debug)]
pub enum Invocation<C> {
    /// Run the service with this configuration; `deprecations` are to be logged once logging is up.
    Run { config: C, deprecations: Vec<Deprecation> },
    /// `healthcheck`: probe `/healthz` at this address and exit 0 or 1.
    Healthcheck(SocketAddr),
}

/// An old variable name that was read in place of its new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    pub old: &'static str,
    pub new: &'static str,
}

impl Deprecation {
    /// Logs the warning (call after logging is initialised).
    pub fn warn(&self) {
        tracing::warn!(old = self.old, new = self.new, "deprecated variable name; rename it");
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set to something unusable.
    #[error("{var}={value} is invalid: {reason}")]
    Invalid { var: String, value: String, reason: String },
    /// A setting without a default is missing.
    #[error("{var} is required: {reason}")]
    Missing { var: String, reason: String },
    /// Anything else clap reports: an unknown flag, `--help` and `--version` (printed by
    /// [`ConfigError::exit`]).
    #[error(transparent)]
    Usage(#[from] clap::Error),
}

impl ConfigError {
    /// A value that is set but rejected by a check beyond its type (e.g. a short secret).
    pub fn invalid(var: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid { var: var.to_owned(), value: format!("{value:?}"), reason: reason.into() }
    }

    /// Prints the error (or the help/version text clap produced) and returns the exit code:
    /// 0 for `--help`/`--version`, 2 for a configuration error.
    pub fn exit(&self) -> std::process::ExitCode {
        match self {
            Self::Usage(error) => {
                let _ = error.print();
                std::process::ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
            }
            other => {
                eprintln!("error: {other}");
                std::process::ExitCode::from(2)
            }
        }
    }
}

/// Reads the configuration from the process's arguments and environment.
///
/// `<binary> healthcheck` is answered from [`ServiceSpec::healthcheck_var`] alone, so that an
/// unrelated bad variable never fails a container's health check.
pub fn from_env<C: Args + FromArgMatches>(spec: &ServiceSpec) -> Result<Invocation<C>, ConfigError> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == HEALTHCHECK) {
        let command = healthcheck_command(spec);
        let matches = command.clone().try_get_matches_from(&args).map_err(|error| translate(&command, error))?;
        let addr = matches
            .subcommand_matches(HEALTHCHECK)
            .and_then(|sub| sub.get_one::<SocketAddr>("addr"))
            .copied()
            .ok_or_else(|| ConfigError::Missing {
            var: spec.healthcheck_var.to_owned(),
            reason: "no address".into(),
        })?;
        return Ok(Invocation::Healthcheck(addr));
    }
    let (flags, deprecations) = env_flags::<C>(spec, |var| std::env::var(var).ok())?;
    args.extend(flags);
    let command = without_blank_env(service_command::<C>(spec), |var| std::env::var_os(var))
        .subcommand(healthcheck_subcommand(spec));
    let config = parse::<C>(command, args)?;
    Ok(Invocation::Run { config, deprecations })
}

/// The flags [`from_env`] adds to the arguments, with the deprecations to log: old variable
/// names become explicit flags (which take precedence over the environment) when the new name
/// is not set, so no process-wide environment is rewritten; secrets named by `<VAR>_FILE` are
/// read. Found on the full command: a variable set blank (which clap is then told not to read)
/// may still have its `_FILE` or an old name, as compose's `VAR: ${VAR:-}` next to
/// `VAR_FILE: /run/secrets/...` has.
fn env_flags<C: Args>(
    spec: &ServiceSpec,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, Vec<Deprecation>), ConfigError> {
    let command = service_command::<C>(spec);
    let (mut flags, deprecations) = renamed_flags(spec, &command, &get);
    flags.extend(secret_files(&command, &get)?);
    Ok((flags, deprecations))
}

/// Reads the configuration through `lookup` only (never the process environment): unset or
/// blank variables take their default. For tests, which build a service's `Config` from a map.
pub fn from_lookup<C: Args + FromArgMatches>(
    spec: &ServiceSpec,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<C, ConfigError> {
    let command = service_command::<C>(spec);
    let mut args: Vec<OsString> = vec![spec.name.into()];
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        if let Some(value) = var.to_str().and_then(|var| non_blank(lookup(var))) {
            args.push(format!("--{long}={value}").into());
        }
    }
    args.extend(renamed_flags(spec, &command, &lookup).0);
    args.extend(secret_files(&command, &lookup)?);
    let command = command.mut_args(|arg| arg.env(None));
    // Keep the variable names for error messages although the environment is not read.
    let names = service_command::<C>(spec);
    let matches = command.try_get_matches_from(args).map_err(|error| translate(&names, error))?;
    C::from_arg_matches(&matches).map_err(|error| translate(&names, error))
}

/// One setting as `--help` shows it, for documentation and the tests that keep it true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable.
    pub var: String,
    /// The default, as text (none for a setting without one).
    pub default: Option<String>,
    /// The one-line meaning.
    pub help: String,
}

/// Every setting of a service's `Config`, in `--help` order, with the service's defaults.
pub fn settings<C: Args>(spec: &ServiceSpec) -> Vec<Setting> {
    service_command::<C>(spec)
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?.to_owned();
            let default = arg.get_default_values().first().and_then(|value| value.to_str()).map(str::to_owned);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            Some(Setting { var, default, help })
        })
        .collect()
}

const HEALTHCHECK: &str = "healthcheck";

fn service_command<C: Args>(spec: &ServiceSpec) -> Command {
    let command = Command::new(spec.name)
        .version(spec.version)
        .about(spec.about)
        .after_help(
            "Every option can be set by the environment variable shown with it; a secret (a URL \
             or key whose value is hidden) can also be read from the file named by <VARIABLE>_FILE.",
        )
        .args_conflicts_with_subcommands(true);
    // A `Config` struct's doc comment would otherwise replace the service's one-line about.
    let command = C::augment_args(command).about(spec.about).long_about(None);
    spec.defaults.iter().fold(command, |command, &(var, default)| {
        command
            .mut_args(|arg| if arg.get_env().is_some_and(|env| env == var) { arg.default_value(default) } else { arg })
    })
}

fn healthcheck_subcommand(spec: &ServiceSpec) -> Command {
    Command::new(HEALTHCHECK)
        .about("Probe a running instance's /healthz (exit code 0 when it answers 200), for container health checks")
        .arg(
            Arg::new("addr")
                .long("addr")
                .env(spec.healthcheck_var)
                .default_value(default_of(spec, spec.healthcheck_var).unwrap_or("0.0.0.0:9090"))
                .value_parser(clap::value_parser!(SocketAddr))
                .help("The address the service binds; a wildcard address is probed over loopback"),
        )
}

fn healthcheck_command(spec: &ServiceSpec) -> Command {
    let healthcheck = without_blank_env(healthcheck_subcommand(spec), |var| std::env::var_os(var));
    Command::new(spec.name).version(spec.version).subcommand(healthcheck)
}

/// Stops reading the variables that are set but blank, so they take their default as an
/// unset one does (and as [`from_lookup`] reads them): compose files pass `VAR: ${VAR:-}`,
/// which must mean "not configured", never an empty value (e.g. a 0-byte key).
fn without_blank_env(command: Command, get: impl Fn(&std::ffi::OsStr) -> Option<OsString>) -> Command {
    command.mut_args(|arg| {
        let blank = arg.get_env().and_then(&get).is_some_and(|value| value.to_string_lossy().trim().is_empty());
        if blank { arg.env(None) } else { arg }
    })
}

fn default_of(spec: &ServiceSpec, var: &str) -> Option<&'static str> {
    spec.defaults.iter().find(|(name, _)| *name == var).map(|(_, default)| *default)
}

fn parse<C: FromArgMatches>(command: Command, args: Vec<OsString>) -> Result<C, ConfigError> {
    let matches: ArgMatches = command.clone().try_get_matches_from(args).map_err(|error| translate(&command, error))?;
    C::from_arg_matches(&matches).map_err(|error| translate(&command, error))
}

/// Flags for the old variable names that are set while their new names are not, and the
/// deprecations to log for them.
fn renamed_flags(
    spec: &ServiceSpec,
    command: &Command,
    get: impl Fn(&str) -> Option<String>,
) -> (Vec<OsString>, Vec<Deprecation>) {
    let mut flags = Vec::new();
    let mut deprecations = Vec::new();
    for &(old, new) in spec.renamed {
        let (Some(value), None) = (non_blank(get(old)), non_blank(get(new))) else { continue };
        if let Some(long) = long_of(command, new) {
            flags.push(format!("--{long}={value}").into());
            deprecations.push(Deprecation { old, new });
        }
    }
    (flags, deprecations)
}

fn long_of(command: &Command, var: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_env().is_some_and(|env| env == var))
        .and_then(|arg| arg.get_long().map(str::to_owned))
}

/// Turns clap's value errors into ones that name the environment variable.
fn translate(command: &Command, error: clap::Error) -> ConfigError {
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(text)) => text.clone(),
        _ => return ConfigError::Usage(error),
    };
    // `--prefetch <PREFETCH>` -> `prefetch`
    let long = arg.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default().to_owned();
    let mut arguments = command.get_arguments().chain(command.get_subcommands().flat_map(Command::get_arguments));
    let Some(found) = arguments.find(|candidate| candidate.get_long() == Some(long.as_str())) else {
        return ConfigError::Usage(error);
    };
    let var = found.get_env().and_then(|var| var.to_str()).map_or_else(|| format!("--{long}"), str::to_owned);
    match error.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let value = match error.get(ContextKind::InvalidValue) {
                Some(clap::error::ContextValue::String(value)) if !found.is_hide_env_values_set() => {
                    format!("{value:?}")
                }
                _ => "(hidden)".to_owned(),
            };
            let reason =
                std::error::Error::source(&error).map_or_else(|| error.kind().to_string(), ToString::to_string);
            ConfigError::Invalid { var, value, reason }
        }
        ErrorKind::MissingRequiredArgument => ConfigError::Missing { var, reason: "no default".to_owned() },
        _ => ConfigError::Usage(error),
    }
}

/// Flags for the secrets read from files: a secret setting `VAR` that is unset but has
/// `VAR_FILE` naming a file (as Docker and Kubernetes mount secrets) takes the file's content,
/// without its trailing line break. An unreadable file is an error naming `VAR_FILE`.
fn secret_files(command: &Command, get: impl Fn(&str) -> Option<String>) -> Result<Vec<OsString>, ConfigError> {
    let mut flags = Vec::new();
    for arg in command.get_arguments().filter(|arg| arg.is_hide_env_values_set()) {
        let (Some(var), Some(long)) = (arg.get_env().and_then(|var| var.to_str()), arg.get_long()) else { continue };
        let file_var = format!("{var}_FILE");
        let (None, Some(path)) = (non_blank(get(var)), non_blank(get(&file_var))) else { continue };
        let content = std::fs::read_to_string(&path).map_err(|error| ConfigError::Invalid {
            var: file_var.clone(),
            value: format!("{path:?}"),
            reason: error.to_string(),
        })?;
        flags.push(format!("--{long}={}", content.trim_end_matches(['\r', '\n'])).into());
    }
    Ok(flags)
}

fn non_blank(value: Option<String>) -> Option<String> {
    value.map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}

/// A URL or secret: parsed as is, never shown by `Debug` or `--help`.
pub fn secret(text: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(text.to_owned()))
}

/// `AMQP_URL`: one broker URL or a comma-separated list of a cluster's nodes, each parsed now
/// so that a malformed entry stops the service at startup (named by position, redacted).
fn broker_urls(text: &str) -> Result<SecretString, BrokerUrlsError> {
    BrokerUrls::parse(text).map(|_| SecretString::from(text.to_owned()))
}

/// Milliseconds, at least 1.
pub fn millis(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<NonZeroU64>()
        .map(|ms| Duration::from_millis(ms.get()))
        .map_err(|error| format!("{error} (expected milliseconds, at least 1)"))
}

/// The broker: where, and how patiently to reconnect.
#[derive(Debug, Clone, Args)]
pub struct BrokerSettings {
    /// RabbitMQ URL: amqp://user:pass@host:port/vhost (amqps:// for TLS); on a cluster, every node's URL, comma-separated
    #[arg(long = "amqp-url", env = "AMQP_URL", value_name = "URL[,URL...]", default_value = DEFAULT_AMQP_URL, hide_env_values = true, value_parser = broker_urls)]
    pub amqp_url: SecretString,
    /// With several URLs: start at a random one (spreads services over the nodes); false: always start at the first
    #[arg(long = "amqp-shuffle-urls", env = "AMQP_SHUFFLE_URLS", value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub amqp_shuffle_urls: bool,
    /// Type of the retry and dead-letter queues the services own: classic, or quorum on a cluster (whose vhost has default queue type quorum)
    #[arg(
        long = "amqp-queue-type",
        env = "AMQP_QUEUE_TYPE",
        value_name = "TYPE",
        default_value = "classic",
        value_enum
    )]
    pub amqp_queue_type: QueueType,
    /// Longest pause between reconnection attempts, in ms (jittered exponential backoff from 100 ms)
    #[arg(long = "amqp-reconnect-max-ms", env = "AMQP_RECONNECT_MAX_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub amqp_reconnect_max: Duration,
    /// The topic exchange events are published to and event queues are bound to
    #[arg(long = "events-exchange", env = "EVENTS_EXCHANGE", value_name = "NAME", default_value = "events")]
    pub events_exchange: String,
}

impl BrokerSettings {
    /// The transport's connection settings, named after the service.
    pub fn broker_config(&self, service: &str) -> BrokerConfig {
        use secrecy::ExposeSecret as _;
        let mut config = BrokerConfig::new(self.amqp_url.expose_secret(), service).queue_type(self.amqp_queue_type);
        config.reconnect = Backoff { max: self.amqp_reconnect_max, ..Backoff::default() };
        config.shuffle = self.amqp_shuffle_urls;
        config
    }
}

/// The service's own Postgres database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Postgres URL of this service's own database (it must exist; migrated at start)
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres", hide_env_values = true, value_parser = secret)]
    pub database_url: SecretString,
    /// Connections in the pool at most; calls beyond it wait for one
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", value_name = "N", default_value = "10")]
    pub database_max_connections: NonZeroU32,
    /// Longest wait for a pooled database connection, and the statement timeout of every query, in ms
    #[arg(long = "database-timeout-ms", env = "DATABASE_TIMEOUT_MS", value_name = "MS", default_value = "2000", value_parser = millis)]
    pub database_timeout: Duration,
}

/// The operations port and shutdown.
#[derive(Debug, Clone, Args)]
pub struct OpsSettings {
    /// Address of the operations port: /healthz, /readyz, /metrics
    #[arg(long = "ops-addr", env = "OPS_ADDR", value_name = "ADDR", default_value = "0.0.0.0:9090")]
    pub ops_addr: SocketAddr,
    /// How long in-flight work may finish after SIGTERM/SIGINT, in ms
    #[arg(long = "shutdown-grace-ms", env = "SHUTDOWN_GRACE_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub shutdown_grace: Duration,
    /// Threads running the service's tasks (the broker connection has one more of its own); 0: one per CPU
    #[arg(long = "worker-threads", env = "WORKER_THREADS", value_name = "N", default_value = "0")]
    pub worker_threads: usize,
}

/// How a consumer takes messages off its queues, and what it refuses.
#[derive(Debug, Clone, Args)]
pub struct ConsumerSettings {
    /// Unacknowledged messages per queue, hence handlers running at once per queue
    #[arg(long = "prefetch", env = "PREFETCH", value_name = "N", default_value = "32")]
    pub prefetch: NonZeroU16,
    /// Largest message body handled, in bytes; a bigger one is parked in <queue>.dlq unread (x-failure too-large), a waiting caller answered 413
    #[arg(long = "max-message-bytes", env = "MAX_MESSAGE_BYTES", value_name = "BYTES", default_value = "262144")]
    pub max_message_bytes: NonZeroU32,
    /// Messages a dead-letter queue holds at most; when full, parking is refused and the message stays in its queue, retried with backoff
    #[arg(long = "dlq-max-length", env = "DLQ_MAX_LENGTH", value_name = "N", default_value = "10000")]
    pub dlq_max_length: NonZeroU32,
    /// Bytes of message bodies a dead-letter queue holds at most; beyond it, as DLQ_MAX_LENGTH
    #[arg(long = "dlq-max-bytes", env = "DLQ_MAX_BYTES", value_name = "BYTES", default_value = "67108864")]
    pub dlq_max_bytes: NonZeroU64,
}

impl ConsumerSettings {
    /// Sets the server's prefetch, message size limit and dead-letter queue bounds.
    pub fn apply(&self, server: &mut ServerConfig) {
        server.prefetch = self.prefetch.get();
        server.max_message_bytes = usize::try_from(self.max_message_bytes.get()).unwrap_or(usize::MAX);
        server.dlq = DlqLimits { max_length: self.dlq_max_length.get(), max_bytes: self.dlq_max_bytes.get() };
    }
}

/// How a failing event is retried before it is parked in `<queue>.dlq`.
#[derive(Debug, Clone, Args)]
pub struct RetrySettings {
    /// Attempts in all, the first delivery included, before an event is parked in the dead-letter queue
    #[arg(long = "retry-max-attempts", env = "RETRY_MAX_ATTEMPTS", value_name = "N", default_value = "5")]
    pub retry_max_attempts: NonZeroU32,
    /// Wait after the first failed attempt, in ms
    #[arg(long = "retry-initial-delay-ms", env = "RETRY_INITIAL_DELAY_MS", value_name = "MS", default_value = "1000", value_parser = millis)]
    pub retry_initial_delay: Duration,
    /// Each further wait is the previous one times this
    #[arg(long = "retry-multiplier", env = "RETRY_MULTIPLIER", value_name = "N", default_value = "5")]
    pub retry_multiplier: NonZeroU32,
    /// Longest wait between attempts, in ms
    #[arg(long = "retry-max-delay-ms", env = "RETRY_MAX_DELAY_MS", value_name = "MS", default_value = "60000", value_parser = millis)]
    pub retry_max_delay: Duration,
}

impl RetrySettings {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry_max_attempts.get(),
            initial_delay: self.retry_initial_delay,
            multiplier: self.retry_multiplier.get(),
            max_delay: self.retry_max_delay,
        }
    }
}

/// Log lines: their format and filter.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log line format: pretty (for humans) or json (one object per line)
    #[arg(long = "log-format", env = "LOG_FORMAT", value_name = "FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
    /// Log filter, tracing's EnvFilter syntax (e.g. info,shared=debug)
    #[arg(long = "log-filter", env = "RUST_LOG", value_name = "FILTER", default_value = "info")]
    pub log_filter: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use secrecy::ExposeSecret as _;

    use super::*;

    #[derive(Debug, Clone, clap::Parser)]
    struct Sample {
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        consumer: ConsumerSettings,
        #[command(flatten)]
        retry: RetrySettings,
        #[command(flatten)]
        log: LogSettings,
    }

    const SPEC: ServiceSpec = ServiceSpec {
        name: "sample-service",
        version: "1.0.0",
        about: "A sample",
        defaults: &[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sample"), ("PREFETCH", "16")],
        renamed: &[("DB_MAX_CONNECTIONS", "DATABASE_MAX_CONNECTIONS")],
        healthcheck_var: "OPS_ADDR",
    };

    fn read(vars: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        from_lookup(&SPEC, |var| vars.get(var).cloned())
    }

    #[test]
    fn defaults_apply_with_per_service_overrides() {
        let sample = read(&[]).unwrap();
        assert_eq!(sample.broker.amqp_url.expose_secret(), DEFAULT_AMQP_URL);
        assert_eq!(sample.database.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/sample");
        assert_eq!(sample.consumer.prefetch.get(), 16);
        assert_eq!(sample.retry.policy(), RetryPolicy::default());
        assert_eq!(sample.log.log_format, LogFormat::Pretty);
        assert_eq!(sample.broker.events_exchange, "events");
    }

    #[test]
    fn variables_override_and_blank_ones_take_the_default() {
        let sample = read(&[("PREFETCH", "8"), ("LOG_FORMAT", "json"), ("EVENTS_EXCHANGE", "  ")]).unwrap();
        assert_eq!(sample.consumer.prefetch.get(), 8);
        assert_eq!(sample.log.log_format, LogFormat::Json);
        assert_eq!(sample.broker.events_exchange, "events");
    }

    #[test]
    fn errors_name_the_variable_the_value_and_the_reason() {
        let error = read(&[("PREFETCH", "many")]).unwrap_err().to_string();
        assert!(error.starts_with("PREFETCH=\"many\" is invalid: invalid digit"), "{error}");
        let error = read(&[("RETRY_MAX_ATTEMPTS", "0")]).unwrap_err().to_string();
        assert!(error.starts_with("RETRY_MAX_ATTEMPTS=\"0\" is invalid"), "{error}");
        let error = read(&[("RETRY_INITIAL_DELAY_MS", "0")]).unwrap_err().to_string();
        assert!(error.contains("at least 1"), "{error}");
    }

    #[test]
    fn a_secret_can_come_from_a_file_named_by_its_file_variable() {
        let path = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        std::fs::write(&path, "postgres://u:from-file@db/x\n").unwrap();
        let file = path.to_str().unwrap();
        let sample = read(&[("DATABASE_URL_FILE", file)]).unwrap();
        assert_eq!(sample.database.database_url.expose_secret(), "postgres://u:from-file@db/x");
        // The variable itself wins over the file.
        let sample = read(&[("DATABASE_URL", "postgres://direct/x"), ("DATABASE_URL_FILE", file)]).unwrap();
        assert_eq!(sample.database.database_url.expose_secret(), "postgres://direct/x");
        std::fs::remove_file(&path).unwrap();
        let error = read(&[("AMQP_URL_FILE", file)]).unwrap_err().to_string();
        assert!(error.starts_with("AMQP_URL_FILE="), "{error}");
        // Settings that are not secret have no file variant.
        assert_eq!(read(&[("PREFETCH_FILE", file)]).unwrap().consumer.prefetch.get(), 16);
    }

    #[test]
    fn consumer_settings_bound_message_size_and_dead_letter_queues() {
        let sample = read(&[]).unwrap();
        let mut server = ServerConfig::new(sample.broker.broker_config("s"), "s");
        sample.consumer.apply(&mut server);
        assert_eq!((server.prefetch, server.max_message_bytes), (16, 256 * 1024));
        assert_eq!(server.dlq, DlqLimits::default());
        let sample =
            read(&[("MAX_MESSAGE_BYTES", "1024"), ("DLQ_MAX_LENGTH", "5"), ("DLQ_MAX_BYTES", "4096")]).unwrap();
        sample.consumer.apply(&mut server);
        assert_eq!(server.max_message_bytes, 1024);
        assert_eq!(server.dlq, DlqLimits { max_length: 5, max_bytes: 4096 });
        let error = read(&[("MAX_MESSAGE_BYTES", "0")]).unwrap_err().to_string();
        assert!(error.starts_with("MAX_MESSAGE_BYTES=\"0\" is invalid"), "{error}");
    }

    #[test]
    fn every_secret_setting_has_a_file_variant() {
        // The secrets of the shared groups; each service's own (JWT_SECRET, SMTP_URL) is
        // declared hidden the same way and tested by its service.
        for var in ["AMQP_URL", "DATABASE_URL"] {
            let command = service_command::<Sample>(&SPEC);
            let arg = command.get_arguments().find(|arg| arg.get_env().is_some_and(|env| env == var)).unwrap();
            assert!(arg.is_hide_env_values_set(), "{var} is not handled as a secret (no {var}_FILE)");
        }
    }

    #[test]
    fn a_blank_secret_variable_still_reads_its_file() {
        // compose: `DATABASE_URL: ${AUTH_DATABASE_URL:-}` beside `DATABASE_URL_FILE: ...`.
        let path = std::env::temp_dir().join(format!("config-blank-test-{}", std::process::id()));
        std::fs::write(&path, "postgres://u:from-file@db/x\n").unwrap();
        let file = path.to_str().unwrap().to_owned();
        let vars: HashMap<&str, String> = [
            ("DATABASE_URL", String::new()),
            ("DATABASE_URL_FILE", file),
            ("DATABASE_MAX_CONNECTIONS", " ".to_owned()),
            ("DB_MAX_CONNECTIONS", "7".to_owned()),
        ]
        .into();
        let (flags, deprecations) = env_flags::<Sample>(&SPEC, |var| vars.get(var).cloned()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let flags: Vec<String> = flags.iter().map(|flag| flag.to_string_lossy().into_owned()).collect();
        assert!(flags.contains(&"--database-url=postgres://u:from-file@db/x".to_owned()), "{flags:?}");
        assert!(flags.contains(&"--database-max-connections=7".to_owned()), "{flags:?}");
        assert_eq!(deprecations, [Deprecation { old: "DB_MAX_CONNECTIONS", new: "DATABASE_MAX_CONNECTIONS" }]);
    }

    #[test]
    fn a_list_of_broker_urls_is_one_setting() {
        let sample =
            read(&[("AMQP_URL", "amqp://u:p@n1:5672/v, amqp://u:p@n2:5672/v"), ("AMQP_QUEUE_TYPE", "quorum")]).unwrap();
        let broker = sample.broker.broker_config("sample-service");
        assert_eq!(broker.urls.nodes(), "n1:5672, n2:5672");
        assert_eq!(broker.queue_type, QueueType::Quorum);
        assert!(broker.shuffle);
        assert_eq!(read(&[]).unwrap().broker.amqp_queue_type, QueueType::Classic);
        let listed = read(&[("AMQP_SHUFFLE_URLS", "false")]).unwrap();
        assert!(!listed.broker.broker_config("s").shuffle);
    }

    #[test]
    fn a_malformed_broker_list_names_the_entry_and_hides_passwords() {
        let error = read(&[("AMQP_URL", "amqp://u:hunter2@n1/v,amqp//u:hunter2@n2/v")]).unwrap_err().to_string();
        assert!(error.starts_with("AMQP_URL=(hidden) is invalid: entry 2 of 2"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = read(&[("AMQP_QUEUE_TYPE", "mirrored")]).unwrap_err().to_string();
        assert!(error.starts_with("AMQP_QUEUE_TYPE=\"mirrored\" is invalid"), "{error}");
    }

    #[test]
    fn an_old_variable_name_is_read_when_the_new_one_is_unset() {
        let sample = read(&[("DB_MAX_CONNECTIONS", "7")]).unwrap();
        assert_eq!(sample.database.database_max_connections.get(), 7);
        let sample = read(&[("DB_MAX_CONNECTIONS", "7"), ("DATABASE_MAX_CONNECTIONS", "9")]).unwrap();
        assert_eq!(sample.database.database_max_connections.get(), 9);
    }

    #[test]
    fn a_bad_healthcheck_address_names_its_variable() {
        let command = healthcheck_command(&SPEC);
        let error =
            command.clone().try_get_matches_from(["sample-service", "healthcheck", "--addr", "nowhere"]).unwrap_err();
        let error = translate(&command, error).to_string();
        assert!(error.starts_with("OPS_ADDR=\"nowhere\" is invalid"), "{error}");
    }

    #[test]
    fn a_blank_variable_is_not_read_so_it_takes_the_default() {
        let blank_prefetch = |var: &std::ffi::OsStr| (var == "PREFETCH").then(|| OsString::from(" "));
        let command = without_blank_env(service_command::<Sample>(&SPEC), blank_prefetch);
        let env_of = |id: &str| command.get_arguments().find(|arg| arg.get_id() == id).and_then(Arg::get_env);
        assert_eq!(env_of("prefetch"), None, "a blank PREFETCH is not read");
        assert_eq!(env_of("events_exchange").and_then(|var| var.to_str()), Some("EVENTS_EXCHANGE"));
        let matches = command.try_get_matches_from(["sample-service"]).unwrap();
        assert_eq!(matches.get_one::<std::num::NonZeroU16>("prefetch").unwrap().get(), 16);
    }

    #[test]
    fn secrets_are_hidden_from_debug() {
        let sample = read(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        let shown = format!("{sample:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("guest:guest"), "{shown}");
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let mut command = service_command::<Sample>(&SPEC).subcommand(healthcheck_subcommand(&SPEC));
        let help = command.render_long_help().to_string();
        for var in [
            "AMQP_URL",
            "AMQP_RECONNECT_MAX_MS",
            "AMQP_QUEUE_TYPE",
            "AMQP_SHUFFLE_URLS",
            "EVENTS_EXCHANGE",
            "DATABASE_URL",
            "DATABASE_MAX_CONNECTIONS",
            "DATABASE_TIMEOUT_MS",
            "PREFETCH",
            "MAX_MESSAGE_BYTES",
            "DLQ_MAX_LENGTH",
            "DLQ_MAX_BYTES",
            "RETRY_MAX_ATTEMPTS",
            "RETRY_INITIAL_DELAY_MS",
            "RETRY_MULTIPLIER",
            "RETRY_MAX_DELAY_MS",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(help.contains(&format!("env: {var}")), "{var} missing from:\n{help}");
        }
        assert!(help.contains("[default: 16]"), "{help}");
        assert!(help.contains("healthcheck"), "{help}");
    }

    #[test]
    fn settings_lists_each_variable_with_the_services_default() {
        let listed = settings::<Sample>(&SPEC);
        let prefetch = listed.iter().find(|setting| setting.var == "PREFETCH").unwrap();
        assert_eq!(prefetch.default.as_deref(), Some("16"));
        assert!(prefetch.help.starts_with("Unacknowledged messages"), "{prefetch:?}");
        assert!(listed.iter().any(|setting| setting.var == "RUST_LOG"));
    }

    #[test]
    fn the_healthcheck_ignores_unrelated_bad_settings() {
        let command = healthcheck_command(&SPEC);
        let matches =
            command.try_get_matches_from(["sample-service", "healthcheck", "--addr", "0.0.0.0:9191"]).unwrap();
        let addr = matches.subcommand_matches(HEALTHCHECK).unwrap().get_one::<SocketAddr>("addr").unwrap();
        assert_eq!(addr.to_string(), "0.0.0.0:9191");
    }
}
