//! `TestApp`: the real service started in-process through `App::build`, in a
//! [`tests::ServiceEnv`] (a fresh database, queue and exchange names of its own, the fast retry
//! policy), plus a client and a broker probe to drive it.

use std::{net::SocketAddr, time::Duration};

use chrono::{DateTime, Utc};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, RpcError,
    contracts::{GetUser, User, UserCreated},
    topology,
};
use sqlx::PgPool;
use tests::{BrokerProbe, DEADLINE, ServiceEnv};
use tokio_util::sync::DropGuard;
use user_service::{App, Config};
use uuid::Uuid;

/// The callers' RPC timeout (the default of auth-service's `RPC_TIMEOUT_MS`).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// What this suite sets over the harness's variables: a small pool (many tests run at once
/// on one Postgres) and a grace period well inside [`DEADLINE`].
const SUITE_SETTINGS: [(&str, &str); 2] = [("DATABASE_MAX_CONNECTIONS", "4"), ("SHUTDOWN_GRACE_MS", "5000")];

/// The harness's env with this suite's settings.
pub async fn test_env() -> ServiceEnv {
    with_settings(ServiceEnv::new().await, &SUITE_SETTINGS)
}

/// `env` with each (variable, value) of `settings` set.
pub fn with_settings(env: ServiceEnv, settings: &[(&str, &str)]) -> ServiceEnv {
    settings.iter().fold(env, |env, &(var, value)| env.set(var, value))
}

/// One running user-service and what a test needs around it. Dropping it stops the service
/// and the client; the env then deletes its queues, exchange and database.
/// [`TestApp::finish`] also checks that nothing was parked unexpectedly.
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
    /// Stops the service when a test fails before [`TestApp::finish`].
    _stop_on_drop: DropGuard,
    /// Declared last, so the database and broker objects go after everything that uses them.
    env: ServiceEnv,
}

impl TestApp {
    /// Starts the service with the test defaults and waits until it consumes.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Like [`TestApp::spawn`], with `settings` (variable, value) set over the test defaults.
    pub async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
        TestApp::spawn_in(with_settings(test_env().await, settings)).await
    }

    /// Starts the service in `env` (from [`test_env`], e.g. with `DATABASE_URL` pointing at a
    /// chaos proxy).
    pub async fn spawn_in(env: ServiceEnv) -> TestApp {
        let config = Config::from_lookup(|var| env.lookup(var)).expect("test configuration");
        let shutdown = CancellationToken::new();
        let shutdown_guard = shutdown.clone().drop_guard();
        let app = App::build(config, shutdown.clone()).await.expect("user-service starts");
        assert!(app.wait_ready(DEADLINE).await, "user-service did not start consuming");

        let amqp_url = env.amqp_url().to_owned();
        let client = Client::start(
            ClientConfig::new(BrokerConfig::new(amqp_url.clone(), "user-service-tests"))
                .queue(env.user_queue())
                .events_exchange(env.events_exchange())
                .timeout(RPC_TIMEOUT),
            // The client is stopped on its own (Client::shutdown), never by the service's token.
            CancellationToken::new(),
        );
        assert!(client.wait_connected(DEADLINE).await, "test client did not connect");
        let probe = BrokerProbe::connect(&amqp_url).await;
        let pool = env.db().pool().await;
        TestApp {
            amqp_url,
            queue: env.user_queue().to_owned(),
            events_queue: env.user_events_queue().to_owned(),
            exchange: env.events_exchange().to_owned(),
            ops_addr: app.ops_addr(),
            shutdown,
            client,
            probe,
            pool,
            app: Some(app),
            _stop_on_drop: shutdown_guard,
            env,
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

    /// Stops the service and the client, then lets the env assert that no dead-letter queue
    /// holds an unexpected message and delete the test's broker objects and database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.client.shutdown().await;
        let TestApp { env, pool, .. } = self;
        pool.close().await;
        env.finish().await;
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
