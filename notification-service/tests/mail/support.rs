//! `TestApp`: the real service started in-process (same `App::build` as the binary) in a
//! [`ServiceEnv`] of the test kit (a fresh database, queue and exchange names of its own on the
//! shared RabbitMQ, cleanup), mailing to the kit's SMTP sink.

use chrono::{TimeZone, Utc};
use notification_service::{App, Config};
use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, contracts::UserCreated, topology};
use sqlx::PgPool;
use tests::{
    BrokerProbe, DEADLINE, ServiceEnv,
    smtp::{ReceivedMail, SmtpMode, SmtpSink},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The retry policy of these tests, longer than the kit's (about a second): about 15 s of
/// retries (200 ms, 400 ms, then 800 ms). A delivery that finds its event's mail being sent by
/// another attempt is retried until that attempt finishes, and the outage tests restart the
/// SMTP server or the database while events wait in the delay queues; neither may run out of
/// attempts on a slow machine.
const PATIENT_RETRIES: [(&str, &str); 4] = [
    ("RETRY_MAX_ATTEMPTS", "20"),
    ("RETRY_INITIAL_DELAY_MS", "200"),
    ("RETRY_MULTIPLIER", "2"),
    ("RETRY_MAX_DELAY_MS", "800"),
];

/// One service instance (or more, see [`TestApp::another_instance`]) and everything around
/// it. Call [`TestApp::stop`] at the end: it shuts the service down gracefully (asserting that
/// it stops), checks that no event was parked unexpectedly and removes the test's queues and
/// exchange.
pub struct TestApp {
    pub app: App,
    /// More instances on the same queue and database.
    others: Vec<App>,
    pub sink: SmtpSink,
    /// The names, the database (dropped with it) and the cleanup.
    pub env: ServiceEnv,
    /// A pool straight to the test database (not through any proxy the service uses).
    pub pool: PgPool,
    pub probe: BrokerProbe,
    pub client: Client,
    pub amqp_url: String,
    pub queue: String,
    pub dlq: String,
    shutdown: CancellationToken,
}

impl TestApp {
    /// A service mailing to a fresh SMTP sink.
    pub async fn spawn() -> TestApp {
        let sink = SmtpSink::start().await;
        let env = TestApp::env(&sink.url()).await;
        TestApp::start(env, sink).await
    }

    /// A service mailing to `smtp_url` (the sink's, or a proxy in front of it), with extra
    /// environment variables.
    pub async fn spawn_with(sink: SmtpSink, smtp_url: &str, extra: &[(&str, &str)]) -> TestApp {
        let env = extra.iter().fold(TestApp::env(smtp_url).await, |env, (name, value)| env.set(name, *value));
        TestApp::start(env, sink).await
    }

    /// The kit's environment with these tests' settings, mailing to `smtp_url`; adjust it with
    /// [`ServiceEnv::set`] (e.g. `DATABASE_URL` through a proxy), then [`TestApp::start`].
    pub async fn env(smtp_url: &str) -> ServiceEnv {
        PATIENT_RETRIES
            .iter()
            .fold(ServiceEnv::new().await, |env, (name, value)| env.set(name, *value))
            .set("SMTP_URL", smtp_url)
            .set("PREFETCH", "4")
            .set("SMTP_TIMEOUT_MS", "2000")
            // Shorter than the retries above, as it must be (a crashed instance's claims
            // expire before their events run out of attempts); sends get half of it, 5 s.
            .set("CLAIM_LEASE_MS", "10000")
            .set("SHUTDOWN_GRACE_MS", "5000")
    }

    /// Starts the service in `env`, with a client to emit events and a probe of the broker.
    pub async fn start(env: ServiceEnv, sink: SmtpSink) -> TestApp {
        let config = Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone()).await.expect("the service starts");
        assert!(app.wait_ready(DEADLINE).await, "the service did not start consuming");
        let amqp_url = env.amqp_url().to_owned();
        let client = Client::start(
            ClientConfig::new(BrokerConfig::new(amqp_url.clone(), "notification-service-tests"))
                .events_exchange(env.events_exchange().to_owned()),
            shutdown.clone(),
        );
        assert!(client.wait_connected(DEADLINE).await, "the test client did not connect");
        let pool = env.db().pool().await;
        let probe = BrokerProbe::connect(&amqp_url).await;
        let queue = env.notification_queue().to_owned();
        let dlq = topology::dlq_name(&queue);
        TestApp { app, others: Vec::new(), sink, env, pool, probe, client, amqp_url, queue, dlq, shutdown }
    }

    /// Starts one more instance of the service on the same queue, database and SMTP server (a
    /// second replica, with its own instance id); it stops with the first.
    pub async fn another_instance(&mut self) {
        let config = Config::from_lookup(|name| self.env.lookup(name)).expect("test configuration");
        let app = App::build(config, self.shutdown.clone()).await.expect("another instance starts");
        assert!(app.wait_ready(DEADLINE).await, "the second instance did not start consuming");
        self.others.push(app);
    }

    /// Publishes `event` to the events exchange as auth-service does, with `event_id` as the
    /// AMQP `message_id`.
    pub async fn emit(&self, event: &UserCreated, event_id: &str) {
        let options = EmitOptions { message_id: Some(event_id.to_owned()), ..EmitOptions::default() };
        self.client.emit_with(event, options).await.expect("the event is published");
    }

    /// How many `user.created` events this test's consumers finished with `outcome` (`ok`,
    /// `retried`, `parked`), from the transport's metric, which is counted after the message
    /// was acked: proof that a delivery was consumed, without sleeping.
    pub fn handled(&self, outcome: &str) -> u64 {
        transport_count(&self.queue, "event", outcome)
    }

    /// Waits until [`TestApp::handled`] reaches `count` for `outcome`.
    pub async fn wait_handled(&self, outcome: &str, count: u64) {
        tests::eventually(DEADLINE, || async {
            let seen = self.handled(outcome);
            if seen >= count { Ok(()) } else { Err(format!("{seen} of {count} events {outcome}")) }
        })
        .await;
    }

    /// Every mail the sink received, after a round trip to the sink that guarantees any mail
    /// it accepted before is included.
    pub async fn settled_mails(&mut self) -> Vec<ReceivedMail> {
        self.sink.set_mode(SmtpMode::Accept).await;
        self.sink.mails()
    }

    /// The number of mails recorded as sent in `sent_mails`.
    pub async fn recorded(&self) -> i64 {
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM sent_mails WHERE state = 'sent'"#)
            .fetch_one(&self.pool)
            .await
            .expect("count sent_mails")
    }

    /// Shuts the service down, asserts it stopped within its grace period, then lets the kit
    /// check that nothing was parked unexpectedly and remove the test's queues and exchange.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopping: Vec<_> =
            std::iter::once(self.app).chain(self.others).map(|app| tokio::spawn(app.run_until_stopped())).collect();
        let stopped = tokio::time::timeout(DEADLINE, async {
            for app in stopping {
                app.await.expect("a stopping instance panicked");
            }
        })
        .await;
        assert!(stopped.is_ok(), "the service did not stop within {DEADLINE:?}");
        self.pool.close().await;
        self.env.finish().await;
    }
}

/// A `user.created` for a new user.
pub fn user(name: &str, email: &str) -> UserCreated {
    UserCreated {
        id: Uuid::new_v4(),
        email: email.to_owned(),
        name: name.to_owned(),
        created_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 7, 0).single().expect("a valid date"),
    }
}

/// A fresh event id.
pub fn event_id() -> String {
    Uuid::new_v4().to_string()
}

/// Sums `transport_messages_total` for one queue, kind and outcome in the process's registry.
pub fn transport_count(queue: &str, kind: &str, outcome: &str) -> u64 {
    let labels = [format!("queue=\"{queue}\""), format!("kind=\"{kind}\""), format!("outcome=\"{outcome}\"")];
    metric("transport_messages_total", &labels)
}

/// `welcome_mails_total{outcome}` in the process's registry (shared by every test of this
/// binary: compare before and after).
pub fn welcome_mails(outcome: &str) -> u64 {
    metric("welcome_mails_total", &[format!("outcome=\"{outcome}\"")])
}

/// Sums the metric `name` over the series carrying every label in `labels`.
pub fn metric(name: &str, labels: &[String]) -> u64 {
    shared::ops::metrics()
        .render()
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// A plain HTTP/1.0 GET against the ops port: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the ops port");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}
