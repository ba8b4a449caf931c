//! The built notification-service binary as an OS process (for the tests about the binary:
//! signals with work in flight, separate processes, its log lines), with its log file, its ops
//! port and what its `/metrics` says.

use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, contracts::UserCreated};
use tests::{DEADLINE, ServiceEnv, cli::RunningBinary};

use crate::support::http_get;

/// The variables a binary takes from the test's env (the rest keep their defaults or come from
/// the test).
pub const FROM_ENV: [&str; 8] = [
    "AMQP_URL",
    "DATABASE_URL",
    "NOTIFICATION_QUEUE",
    "EVENTS_EXCHANGE",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_INITIAL_DELAY_MS",
    "RETRY_MULTIPLIER",
    "RETRY_MAX_DELAY_MS",
];

/// Starts the built binary with the env's names, database and retry policy, mailing to
/// `smtp_url`, plus `extra`; returns once it is ready (database, queue consumed, SMTP).
pub async fn start(env: &ServiceEnv, smtp_url: &str, extra: &[(&str, &str)]) -> RunningBinary {
    let program = env!("CARGO_BIN_EXE_notification-service");
    let mut settings = vec![("SMTP_URL", smtp_url)];
    settings.extend_from_slice(extra);
    tests::cli::start_ready(program, env, &FROM_ENV, &settings, "OPS_ADDR").await
}

/// `transport_messages_total` of `binary` for `queue`, kind `event`, pattern `user.created`
/// and `outcome`, from its `/metrics`.
pub async fn handled(binary: &RunningBinary, queue: &str, outcome: &str) -> u64 {
    let (status, body) = http_get(binary.addr.parse().unwrap(), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let labels = [
        format!("queue=\"{queue}\""),
        "kind=\"event\"".to_owned(),
        "pattern=\"user.created\"".to_owned(),
        format!("outcome=\"{outcome}\""),
    ];
    body.lines()
        .filter(|line| line.starts_with("transport_messages_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// A client publishing `user.created` to the env's events exchange as auth-service does.
pub async fn publisher(env: &ServiceEnv, shutdown: &CancellationToken) -> Client {
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(env.amqp_url().to_owned(), "notification-binary-tests"))
            .events_exchange(env.events_exchange().to_owned()),
        shutdown.clone(),
    );
    assert!(client.wait_connected(DEADLINE).await, "the test client did not connect");
    client
}

/// Publishes `event` with `event_id` as its AMQP `message_id`.
pub async fn emit(client: &Client, event: &UserCreated, event_id: &str) {
    let options = EmitOptions { message_id: Some(event_id.to_owned()), ..EmitOptions::default() };
    client.emit_with(event, options).await.expect("the event is published");
}
