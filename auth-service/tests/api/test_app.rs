//! `TestApp`: the real service, built by `App::build` as `main` does, on an ephemeral port.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use auth_service::{App, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::CancellationToken;
use sqlx::PgPool;
use tests::{TestDb, names::unique};

/// The JWT key of every test app, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const PASSWORD: &str = "correct horse battery";
/// Deadline for anything asynchronous (events, readiness, reconnection).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running auth-service with its own database, user queue and events exchange.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Dropped (with its database) after the app.
    _db: TestDb,
    /// A pool of our own onto the app's database, for assertions.
    pub pool: PgPool,
    pub user_queue: String,
    pub events_exchange: String,
    /// The broker itself.
    pub broker_url: String,
    shutdown: CancellationToken,
    app: Option<App>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with `tweak` applied to the configuration (URLs, limits, timeouts).
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        tests::logs::init();
        let db = TestDb::create().await;
        let broker_url = tests::amqp_url().await;
        let user_queue = unique("auth_test_user_queue");
        let events_exchange = unique("auth_test_events");
        let vars: HashMap<&str, String> = HashMap::from([
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url.clone()),
            ("DATABASE_MAX_CONNECTIONS", "5".to_owned()),
            ("AMQP_URL", broker_url.clone()),
            ("AMQP_RECONNECT_MAX_MS", "500".to_owned()),
            ("USER_QUEUE", user_queue.clone()),
            ("EVENTS_EXCHANGE", events_exchange.clone()),
            // Cheap hashes: these tests are about behaviour; the benchmark uses real costs.
            ("ARGON2_M_COST", "1024".to_owned()),
            ("ARGON2_T_COST", "1".to_owned()),
            ("RATE_LIMIT_PER_SECOND", "1000".to_owned()),
            ("RATE_LIMIT_BURST", "1000".to_owned()),
        ]);
        let mut config = Config::from_lookup(|var| vars.get(var).cloned()).unwrap();
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone()).await.expect("the app starts");
        let pool = db.pool().await;
        TestApp {
            addr: app.http_addr(),
            http: reqwest::Client::new(),
            _db: db,
            pool,
            user_queue,
            events_exchange,
            broker_url,
            shutdown,
            app: Some(app),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn signup(&self, email: &str, name: &str) -> Response {
        self.post_json("/auth/signup", &json!({"email": email, "password": PASSWORD, "name": name})).await
    }

    /// Signs up and returns the created user's body.
    pub async fn create_user(&self, email: &str, name: &str) -> Value {
        let response = self.signup(email, name).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json("/auth/login", &json!({"email": email, "password": password})).await
    }

    /// Signs up, logs in; returns (user, access token).
    pub async fn user_with_token(&self, email: &str) -> (Value, String) {
        let user = self.create_user(email, "Ada").await;
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (user, body["accessToken"].as_str().unwrap().to_owned())
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Waits until `/readyz` answers `status` (200: Postgres and broker up).
    pub async fn wait_ready(&self, status: StatusCode) {
        tests::eventually(DEADLINE, || async {
            let response = self.http.get(self.url("/readyz")).send().await.map_err(|e| e.to_string())?;
            let got = response.status();
            let body = response.text().await.unwrap_or_default();
            if got == status { Ok(()) } else { Err(format!("{got}: {body}")) }
        })
        .await;
    }

    /// Stops the app and waits for its shutdown sequence (HTTP, relay flush, broker, pool).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            tokio::time::timeout(DEADLINE, app.run_until_stopped()).await.expect("the app stops in time");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        delete_broker_objects(
            self.broker_url.clone(),
            vec![self.user_queue.clone()],
            Some(self.events_exchange.clone()),
        );
    }
}

/// Removes a test's queues (with the consumer-owned retry and dead-letter queues a server
/// declares next to them) and its exchange, so repeated runs leave the broker clean.
/// Runs on a thread of its own since `Drop` cannot await.
pub fn delete_broker_objects(broker_url: String, queues: Vec<String>, exchange: Option<String>) {
    let cleanup = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let probe = tests::BrokerProbe::connect(&broker_url).await;
            let mut names = Vec::new();
            for queue in &queues {
                names.push(queue.clone());
                names.push(shared::topology::dlq_name(queue));
                for delay in shared::RetryPolicy::default().delays() {
                    names.push(shared::topology::retry_queue_name(queue, delay));
                }
            }
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            probe.delete_queues(&names).await;
            if let Some(exchange) = exchange {
                probe.delete_exchange(&exchange).await;
            }
        });
    });
    let _ = cleanup.join();
}
