//! `TestApp`: the real service started in-process through `App::build`, on a fresh database
//! and on queue and exchange names of its own, plus a client and a broker probe to drive it.

use std::{collections::HashMap, net::SocketAddr, sync::mpsc, time::Duration};

use chrono::{DateTime, Utc};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, RpcError,
    contracts::{GetUser, User, UserCreated},
    topology,
};
use sqlx::PgPool;
use tests::{BrokerProbe, TestDb, amqp_url, logs, unique};
use user_service::{App, Config};
use uuid::Uuid;

/// How long anything a test waits for may take.
pub const DEADLINE: Duration = Duration::from_secs(15);
/// The callers' RPC timeout (the default of auth-service's `RPC_TIMEOUT_MS`).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Short retries, so that a failing event reaches its DLQ within a test's patience.
const TEST_RETRY: [(&str, &str); 4] = [
    ("RETRY_MAX_ATTEMPTS", "3"),
    ("RETRY_INITIAL_DELAY_MS", "50"),
    ("RETRY_MULTIPLIER", "2"),
    ("RETRY_MAX_DELAY_MS", "200"),
];

/// One running user-service and what a test needs around it. Dropping it stops the service
/// and deletes its queues and exchange; [`TestApp::finish`] also checks that nothing was
/// parked unexpectedly.
pub struct TestApp {
    pub amqp_url: String,
    pub queue: String,
    pub events_queue: String,
    pub exchange: String,
    pub ops_addr: SocketAddr,
    /// The service's shutdown token.
    pub shutdown: CancellationToken,
    pub client: Client,
    pub probe: BrokerProbe,
    /// A pool on the service's database, for the test's own reads and writes.
    pub pool: PgPool,
    app: Option<App>,
    client_shutdown: CancellationToken,
    retry_delays: Vec<Duration>,
    /// Declared last, so the database is dropped after everything that uses it.
    _db: TestDb,
}

impl TestApp {
    /// Starts the service with the test defaults and waits until it consumes.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Like [`TestApp::spawn`], with `settings` (variable, value) read over the test defaults.
    pub async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
        let db = TestDb::create().await;
        TestApp::spawn_on(db, None, settings).await
    }

    /// Starts the service on `db`, reaching it through `database_url` when given (e.g. a
    /// chaos proxy in front of it).
    pub async fn spawn_on(db: TestDb, database_url: Option<String>, settings: &[(&str, &str)]) -> TestApp {
        logs::init();
        let amqp_url = amqp_url().await;
        let queue = unique("user_queue");
        let events_queue = unique("user_events_queue");
        let exchange = unique("events");
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("AMQP_URL", amqp_url.clone()),
            ("DATABASE_URL", database_url.unwrap_or_else(|| db.url.clone())),
            ("OPS_ADDR", "127.0.0.1:0".to_owned()),
            ("USER_QUEUE", queue.clone()),
            ("USER_EVENTS_QUEUE", events_queue.clone()),
            ("EVENTS_EXCHANGE", exchange.clone()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("SHUTDOWN_GRACE_MS", "5000".to_owned()),
        ]);
        vars.extend(TEST_RETRY.iter().chain(settings).map(|&(var, value)| (var, value.to_owned())));
        let config = Config::from_lookup(|var| vars.get(var).cloned()).expect("test configuration");
        let retry_delays = config.retry.policy().delays();

        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone()).await.expect("user-service starts");
        assert!(app.wait_ready(DEADLINE).await, "user-service did not start consuming");

        let client_shutdown = CancellationToken::new();
        let client = Client::start(
            ClientConfig::new(BrokerConfig::new(amqp_url.clone(), "user-service-tests"))
                .queue(&queue)
                .events_exchange(&exchange)
                .timeout(RPC_TIMEOUT),
            client_shutdown.clone(),
        );
        assert!(client.wait_connected(DEADLINE).await, "test client did not connect");
        let probe = BrokerProbe::connect(&amqp_url).await;
        let pool = db.pool().await;
        TestApp {
            amqp_url,
            queue,
            events_queue,
            exchange,
            ops_addr: app.ops_addr(),
            shutdown,
            client,
            probe,
            pool,
            app: Some(app),
            client_shutdown,
            retry_delays,
            _db: db,
        }
    }

    /// `{cmd:"get_user"}` with `id`, through the shared client.
    pub async fn get_user(&self, id: impl std::fmt::Display) -> Result<User, RpcError> {
        self.client.send(&GetUser { id: id.to_string() }).await
    }

    /// Emits `event` to the test's events exchange with `event_id` as its message id.
    pub async fn emit(&self, event: &UserCreated, event_id: &str) {
        let options = EmitOptions {
            target: Some(EmitTarget::Exchange(self.exchange.clone())),
            message_id: Some(event_id.to_owned()),
            trace: None,
        };
        self.client.emit_with(event, options).await.expect("the broker confirms the event");
    }

    /// Writes a user straight into the projection (for tests of `get_user` alone).
    pub async fn seed(&self, user: &User) {
        sqlx::query!(
            "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)",
            user.id,
            user.email,
            user.name,
            user.created_at,
        )
        .execute(&self.pool)
        .await
        .expect("seed a user");
    }

    /// The rows the projection holds for `id`.
    pub async fn rows_for(&self, id: Uuid) -> i64 {
        sqlx::query_scalar!(r#"SELECT count(*) AS "rows!" FROM users WHERE id = $1"#, id)
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// The dead-letter queue of the events queue.
    pub fn dlq(&self) -> String {
        topology::dlq_name(&self.events_queue)
    }

    /// The URL of the ops port, e.g. `ops_url("/readyz")`.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_addr)
    }

    /// Stops the service gracefully and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            tokio::time::timeout(DEADLINE, app.run_until_stopped()).await.expect("user-service stops in time");
        }
    }

    /// Stops the service, then asserts that neither queue's DLQ holds an unexpected message.
    pub async fn finish(mut self) {
        self.stop().await;
        self.probe.assert_empty(&self.dlq()).await;
        self.probe.assert_empty(&topology::dlq_name(&self.queue)).await;
    }

    fn broker_names(&self) -> (Vec<String>, String) {
        let mut queues = vec![self.queue.clone(), self.events_queue.clone()];
        for queue in [&self.queue, &self.events_queue] {
            queues.push(topology::dlq_name(queue));
            queues.extend(self.retry_delays.iter().map(|delay| topology::retry_queue_name(queue, *delay)));
        }
        (queues, self.exchange.clone())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.client_shutdown.cancel();
        // Drop may run inside the test's runtime: delete the broker objects from a thread
        // with a runtime of its own, and wait for it with a bound.
        let (queues, exchange) = self.broker_names();
        let amqp_url = self.amqp_url.clone();
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("drop-test-app".into()).spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(async {
                    let probe = BrokerProbe::connect(&amqp_url).await;
                    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
                    probe.delete_queues(&queues).await;
                    probe.delete_exchange(&exchange).await;
                });
            }
            let _ = done.send(());
        });
        if spawned.is_ok() && finished.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!("test app: could not delete queues of {}", self.queue);
        }
    }
}

/// A user with a fresh id and a creation time with millisecond precision (as on the wire).
pub fn new_user(name: &str) -> User {
    let id = Uuid::new_v4();
    User {
        id,
        email: format!("{}@example.com", id.simple()),
        name: name.to_owned(),
        created_at: at("2024-05-01T12:00:00.123Z"),
    }
}

/// The `user.created` event announcing `user`.
pub fn created(user: &User) -> UserCreated {
    UserCreated { id: user.id, email: user.email.clone(), name: user.name.clone(), created_at: user.created_at }
}

/// A timestamp from RFC 3339 text.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("an RFC 3339 timestamp").with_timezone(&Utc)
}

/// The HTTP status of `GET url`.
pub async fn http_status(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(url).await.expect("the ops port answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The status and message of a remote error, or a panic naming what came instead.
pub fn remote_error<T: std::fmt::Debug>(result: Result<T, RpcError>) -> (Option<u16>, String) {
    match result {
        Err(RpcError::Remote { error, .. }) => (error.status(), error.message().unwrap_or_default().to_owned()),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// What `/metrics` renders now.
pub async fn metrics_text(app: &TestApp) -> String {
    reqwest::get(app.ops_url("/metrics")).await.expect("the ops port answers").text().await.expect("a text body")
}
