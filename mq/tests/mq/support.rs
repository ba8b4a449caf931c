//! Running the real `mq` binary and reading what it printed.

use std::process::Output;

use serde_json::Value;
use tests::ServiceEnv;

/// The built `mq` binary.
pub const MQ: &str = env!("CARGO_BIN_EXE_mq");

/// What one `mq` run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its `--json` output.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|error| panic!("mq printed no JSON ({error}): {self:?}"))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: tests::cli::text(&output.stdout),
            stderr: tests::cli::text(&output.stderr),
        }
    }
}

/// The variables `mq` reads, from a service env: the broker, the queue and exchange names, the
/// retry schedule.
pub fn vars(env: &ServiceEnv) -> Vec<(String, String)> {
    [
        "AMQP_URL",
        "USER_QUEUE",
        "USER_EVENTS_QUEUE",
        "NOTIFICATION_QUEUE",
        "EVENTS_EXCHANGE",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_INITIAL_DELAY_MS",
        "RETRY_MULTIPLIER",
        "RETRY_MAX_DELAY_MS",
    ]
    .iter()
    .filter_map(|var| env.lookup(var).map(|value| ((*var).to_owned(), value)))
    .collect()
}

/// Runs `mq args…` with nothing in its environment but `env`'s variables.
pub async fn mq(env: &ServiceEnv, args: &[&str]) -> Run {
    let vars = vars(env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tests::cli::run(MQ, args, &vars).await.into()
}

/// Sums the transport metric of the process's registry for one queue and outcome
/// (`transport_messages_total{queue, kind="event", outcome}`), counted after the ack.
pub fn handled(queue: &str, outcome: &str) -> u64 {
    let labels = [format!("queue=\"{queue}\""), "kind=\"event\"".to_owned(), format!("outcome=\"{outcome}\"")];
    shared::ops::metrics()
        .render()
        .lines()
        .filter(|line| line.starts_with("transport_messages_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}
