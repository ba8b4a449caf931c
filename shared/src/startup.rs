//! The one `main` every service binary runs: parse the configuration (answering `healthcheck`
//! before anything else is read), start logging (and span export), build and run the service
//! until SIGTERM or SIGINT, export the last spans, and map the outcome to an exit code. No
//! `process::exit` anywhere below it.

use std::{error::Error, future::Future, process::ExitCode};

use clap::{Args, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, ConfigError, Invocation, LogSettings, OpsSettings, ServiceSpec},
    ops, shutdown, telemetry,
};

/// Metric: the runtime's worker threads (`WORKER_THREADS`, or one per CPU).
pub const WORKERS_METRIC: &str = "runtime_worker_threads";

/// A service's configuration, as `main` needs to see it.
pub trait ServiceConfig: Args + FromArgMatches {
    /// The logging settings, applied before the service is built.
    fn log(&self) -> &LogSettings;

    /// The operations settings; `WORKER_THREADS` sizes the runtime the service runs on.
    fn ops(&self) -> &OpsSettings;

    /// Checks that need several settings at once (e.g. a secret required outside development).
    /// Runs before the service is built; an error exits like any configuration error.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Runs a service binary. `run` builds the service and returns when it has stopped; an error
/// from it is logged with its causes and exits with 1. Configuration errors exit with 2,
/// `--help` and `--version` with 0, `healthcheck` with 0 or 1.
pub fn main<C, F, Fut, E>(spec: &ServiceSpec, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Error,
{
    let invocation = match config::from_env::<C>(spec) {
        Ok(invocation) => invocation,
        Err(error) => return error.exit(),
    };
    if let Invocation::Run { config, .. } = &invocation
        && let Err(error) = config.validate()
    {
        return error.exit();
    }
    let runtime = match runtime(&invocation) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match invocation {
        Invocation::Healthcheck(addr) => {
            if runtime.block_on(ops::healthcheck(addr)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Invocation::Run { config, deprecations } => {
            // Outside the runtime: the span exporter's blocking HTTP client has a runtime of its own.
            let telemetry = telemetry::init(config.log().log_format, &config.log().log_filter, spec.name);
            deprecations.iter().for_each(config::Deprecation::warn);
            let code = runtime.block_on(async {
                // Installed now, so that the gauge below is kept.
                let _recorder = ops::metrics();
                metrics::describe_gauge!(WORKERS_METRIC, "Threads running the service's tasks (WORKER_THREADS)");
                metrics::gauge!(WORKERS_METRIC).set(tokio::runtime::Handle::current().metrics().num_workers() as f64);
                match shutdown::run_until_signal(|stop| run(config, stop)).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(service = spec.name, error = %Causes(&error), "service failed");
                        ExitCode::FAILURE
                    }
                }
            });
            // The service has stopped: what its last requests traced goes out now.
            telemetry.shutdown();
            code
        }
    }
}

/// The runtime a run of the service uses: `WORKER_THREADS` workers, or tokio's default (one
/// per CPU, or `TOKIO_WORKER_THREADS`) when it is 0. A health check needs one thread.
fn runtime<C: ServiceConfig>(invocation: &Invocation<C>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match invocation {
        Invocation::Healthcheck(_) => tokio::runtime::Builder::new_current_thread(),
        Invocation::Run { config, .. } => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = std::num::NonZeroUsize::new(config.ops().worker_threads) {
                builder.worker_threads(threads.get());
            }
            builder
        }
    };
    builder.enable_all().build()
}

/// An error with its `source` chain, `: `-separated.
struct Causes<'a>(&'a dyn Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
