//! The service's configuration: the shared settings groups (declared once in
//! [`shared::config`]) plus the two queues this service owns. Every setting is an environment
//! variable (also a `--flag`) with a default that works against the compose stack and against
//! local services; `user-service --help` lists them all (README, "Configuration").

use shared::config::{
    BrokerSettings, ConfigError, ConsumerSettings, DatabaseSettings, LogSettings, OpsSettings, RetrySettings,
    ServiceSpec,
};

/// What the binary tells the shared reader about itself.
pub const SERVICE: ServiceSpec = ServiceSpec {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    about: "Answers {cmd:\"get_user\"} over RabbitMQ from its own Postgres projection of user.created events",
    defaults: &[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/users"),
        // One connection per lookup batch and per projected event: 16 served the bench best.
        ("DATABASE_MAX_CONNECTIONS", "16"),
        // Above the shared default (32): a lookup is cheap and coalesced, and with 64 callers at
        // once 128 took +18-24 % req/s and less CPU per call in RabbitMQ, Postgres and here than
        // 32, with which half the requests waited in the queue (BENCH.md). Still a bound: 128
        // handlers per queue, at most 128 x MAX_MESSAGE_BYTES (32 MiB) of bodies held.
        ("PREFETCH", "128"),
        // A call costs this process ~35 us of CPU, and lapin reads and writes the socket on a
        // thread of its own: with one worker, handlers of one burst run back to back (bigger
        // lookup batches, no wake-ups of an idle second worker), which on 2 CPUs took +18 %
        // req/s at concurrency 64 and +8 % at 16 over one worker per CPU (BENCH.md). Raise it
        // when a profile shows this process CPU-bound on one core.
        ("WORKER_THREADS", "1"),
    ],
    renamed: &[("DATABASE_POOL_SIZE", "DATABASE_MAX_CONNECTIONS")],
    healthcheck_var: "OPS_ADDR",
};

/// Everything [`crate::App::build`] needs. The binary reads it through
/// [`shared::startup::main`]; tests build it with [`Config::from_lookup`] and then adjust fields.
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
    /// The get_user RPC queue (durable, no arguments, as NestJS clients assert it)
    #[arg(long = "user-queue", env = "USER_QUEUE", value_name = "NAME", default_value = "user_queue")]
    pub user_queue: String,
    /// The projection's queue, bound to the events exchange for user.created
    #[arg(
        long = "user-events-queue",
        env = "USER_EVENTS_QUEUE",
        value_name = "NAME",
        default_value = "user_events_queue"
    )]
    pub user_events_queue: String,
}

impl Config {
    /// Reads variables through `lookup` only (never the process environment); unset or blank
    /// variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        shared::config::from_lookup(&SERVICE, lookup)
    }
}

impl shared::startup::ServiceConfig for Config {
    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn ops(&self) -> &OpsSettings {
        &self.ops
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{collections::HashMap, time::Duration};

    use secrecy::ExposeSecret;
    use shared::{RetryPolicy, telemetry::LogFormat};

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|var| vars.get(var).cloned())
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = config(&[]).unwrap();
        assert_eq!(config.broker.amqp_url.expose_secret(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(config.broker.amqp_reconnect_max, Duration::from_secs(10));
        assert_eq!(config.broker.events_exchange, "events");
        assert_eq!(config.database.database_url.expose_secret(), "postgres://postgres@127.0.0.1:5432/users");
        assert_eq!(config.database.database_max_connections.get(), 16);
        assert_eq!(config.database.database_timeout, Duration::from_secs(2));
        assert_eq!(config.ops.ops_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.ops.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.user_queue, "user_queue");
        assert_eq!(config.user_events_queue, "user_events_queue");
        assert_eq!(config.consumer.prefetch.get(), 128);
        assert_eq!(config.ops.worker_threads, 1);
        assert_eq!(config.retry.policy(), RetryPolicy::default());
        assert_eq!(config.log.log_format, LogFormat::Pretty);
        assert_eq!(config.log.log_filter, "info");
    }

    #[test]
    fn blank_variables_take_their_default() {
        let config = config(&[("USER_QUEUE", "  "), ("PREFETCH", "")]).unwrap();
        assert_eq!(config.user_queue, "user_queue");
        assert_eq!(config.consumer.prefetch.get(), 128);
    }

    #[test]
    fn variables_override_defaults() {
        let config = config(&[
            ("PREFETCH", "8"),
            ("LOG_FORMAT", "json"),
            ("RETRY_INITIAL_DELAY_MS", "50"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("USER_EVENTS_QUEUE", "projection"),
        ])
        .unwrap();
        assert_eq!(config.consumer.prefetch.get(), 8);
        assert_eq!(config.log.log_format, LogFormat::Json);
        assert_eq!(config.retry.policy().initial_delay, Duration::from_millis(50));
        assert_eq!(config.database.database_max_connections.get(), 4);
        assert_eq!(config.user_events_queue, "projection");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let var = |vars: &[(&str, &str)]| match config(vars).unwrap_err() {
            ConfigError::Invalid { var, .. } => var,
            other => panic!("expected an invalid value, got {other}"),
        };
        assert_eq!(var(&[("PREFETCH", "many")]), "PREFETCH");
        assert_eq!(var(&[("OPS_ADDR", "nowhere")]), "OPS_ADDR");
        assert_eq!(var(&[("DATABASE_MAX_CONNECTIONS", "0")]), "DATABASE_MAX_CONNECTIONS");
        let error = config(&[("RETRY_MAX_ATTEMPTS", "0")]).unwrap_err().to_string();
        assert!(error.starts_with("RETRY_MAX_ATTEMPTS=\"0\" is invalid"), "{error}");
    }

    #[test]
    fn debug_hides_the_urls() {
        let shown = format!("{:?}", config(&[("DATABASE_URL", "postgres://u:hunter2@db/users")]).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("guest:guest"), "{shown}");
    }

    #[test]
    fn the_readme_table_lists_every_setting_with_its_default() {
        let readme = include_str!("../README.md");
        let section = readme.split("### Configuration").nth(1).and_then(|rest| rest.split("\n### ").next());
        let documented: Vec<(String, String)> = section
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(|cell| cell.trim().trim_matches('`')).collect();
                (cells[1].to_owned(), cells[2].to_owned())
            })
            .collect();
        let settings: Vec<(String, String)> = shared::config::settings::<Config>(&SERVICE)
            .into_iter()
            .map(|setting| (setting.var, setting.default.unwrap_or_default()))
            .collect();
        assert_eq!(documented, settings, "README.md's configuration table against --help, in its order");
    }
}
