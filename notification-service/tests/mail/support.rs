//! `TestApp`: the real service started in-process (same `App::build` as the binary) against a
//! fresh database, the kit's SMTP sink, the shared RabbitMQ and queue/exchange names of its own.

use std::{collections::HashMap, time::Duration};

use chrono::{TimeZone, Utc};
use notification_service::{App, Config};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, RetryPolicy, contracts::UserCreated, topology,
};
use sqlx::PgPool;
use tests::{
    BrokerProbe, TestDb,
    smtp::{ReceivedMail, SmtpMode, SmtpSink},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Long enough for a slow CI machine, short enough that a hang fails the test quickly.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One service instance (or more, see [`TestApp::another_instance`]) and everything around
/// it. Call [`TestApp::stop`] at the end: it shuts the service down gracefully (asserting that
/// it stops), checks that no event was parked unexpectedly and removes the test's queues and
/// exchange.
pub struct TestApp {
    pub app: App,
    /// More instances on the same queue and database.
    others: Vec<App>,
    pub sink: SmtpSink,
    /// Dropped with the app: the database goes away with the test.
    _db: TestDb,
    /// A pool straight to the test database (not through any proxy the service uses).
    pub pool: PgPool,
    pub probe: BrokerProbe,
    pub client: Client,
    pub amqp_url: String,
    pub queue: String,
    pub dlq: String,
    pub exchange: String,
    vars: HashMap<String, String>,
    retry: RetryPolicy,
    shutdown: CancellationToken,
}

impl TestApp {
    /// A service mailing to a fresh SMTP sink.
    pub async fn spawn() -> TestApp {
        let sink = SmtpSink::start().await;
        let url = sink.url();
        TestApp::spawn_with(sink, &url, &[]).await
    }

    /// A service mailing to `smtp_url` (the sink's, or a proxy in front of it), with extra
    /// environment variables.
    pub async fn spawn_with(sink: SmtpSink, smtp_url: &str, extra: &[(&str, &str)]) -> TestApp {
        TestApp::spawn_on(TestDb::create().await, sink, smtp_url, extra).await
    }

    /// As [`TestApp::spawn_with`], on `db` (whose URL `extra` may replace with a proxy's).
    pub async fn spawn_on(db: TestDb, sink: SmtpSink, smtp_url: &str, extra: &[(&str, &str)]) -> TestApp {
        tests::logs::init();
        let amqp_url = tests::amqp_url().await;
        let queue = tests::unique("notification_queue");
        let exchange = tests::unique("events");
        let mut vars: HashMap<String, String> = [
            ("AMQP_URL", amqp_url.clone()),
            ("DATABASE_URL", db.url.clone()),
            ("SMTP_URL", smtp_url.to_owned()),
            ("NOTIFICATION_QUEUE", queue.clone()),
            ("EVENTS_EXCHANGE", exchange.clone()),
            ("OPS_ADDR", "127.0.0.1:0".to_owned()),
            ("PREFETCH", "4".to_owned()),
            ("SMTP_TIMEOUT_MS", "2000".to_owned()),
            // Quick retries: 200 ms, 400 ms, then 800 ms, for about 15 s in all.
            ("RETRY_MAX_ATTEMPTS", "20".to_owned()),
            ("RETRY_INITIAL_DELAY_MS", "200".to_owned()),
            ("RETRY_MULTIPLIER", "2".to_owned()),
            ("RETRY_MAX_DELAY_MS", "800".to_owned()),
            ("SHUTDOWN_GRACE_MS", "5000".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        vars.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test configuration");
        let retry = config.retry.policy();

        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone()).await.expect("the service starts");
        assert!(app.wait_ready(DEADLINE).await, "the service did not start consuming");
        let client = Client::start(
            ClientConfig::new(BrokerConfig::new(amqp_url.clone(), "notification-service-tests"))
                .events_exchange(exchange.clone()),
            shutdown.clone(),
        );
        assert!(client.wait_connected(DEADLINE).await, "the test client did not connect");
        let pool = db.pool().await;
        let probe = BrokerProbe::connect(&amqp_url).await;
        let dlq = topology::dlq_name(&queue);
        TestApp {
            app,
            others: Vec::new(),
            sink,
            _db: db,
            pool,
            probe,
            client,
            amqp_url,
            queue,
            dlq,
            exchange,
            vars,
            retry,
            shutdown,
        }
    }

    /// Starts one more instance of the service on the same queue, database and SMTP server (a
    /// second replica, with its own instance id); it stops with the first.
    pub async fn another_instance(&mut self) {
        let config = Config::from_lookup(|name| self.vars.get(name).cloned()).expect("test configuration");
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

    /// Shuts the service down, asserts it stopped within its grace period and parked nothing
    /// unexpected, and removes the test's queues and exchange.
    pub async fn stop(self) {
        self.probe.assert_empty(&self.dlq).await;
        self.shutdown.cancel();
        let all = std::iter::once(self.app).chain(self.others).map(App::run_until_stopped);
        let stopped = tokio::time::timeout(DEADLINE, futures_join_all(all)).await;
        assert!(stopped.is_ok(), "the service did not stop within {DEADLINE:?}");
        let retry_queues: Vec<String> =
            self.retry.delays().into_iter().map(|delay| topology::retry_queue_name(&self.queue, delay)).collect();
        let mut queues = vec![self.queue.as_str(), self.dlq.as_str()];
        queues.extend(retry_queues.iter().map(String::as_str));
        self.probe.delete_queues(&queues).await;
        self.probe.delete_exchange(&self.exchange).await;
    }
}

/// Runs the futures concurrently and waits for all of them.
async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    for task in tasks {
        task.await.expect("a stopping instance panicked");
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
