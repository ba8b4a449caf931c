//! `TestApp`: the real service, built by `App::build` as `main` does, on an ephemeral port, in
//! a `tests::ServiceEnv` (a fresh database, unique queue and exchange names, cleanup).

use auth_service::{App, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::CancellationToken;
use sqlx::PgPool;
use tests::{DEADLINE, ServiceEnv};

/// The JWT key of every test app, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const PASSWORD: &str = "correct horse battery";

/// A running auth-service with its own database, user queue and events exchange.
pub struct TestApp {
    /// Dropped first: dropping a running `App` stops its relay and broker client.
    app: Option<App>,
    shutdown: CancellationToken,
    pub addr: std::net::SocketAddr,
    /// The operations port: /healthz, /readyz, /metrics.
    pub ops_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    /// A pool of our own onto the app's database, for assertions.
    pub pool: PgPool,
    /// The database, broker names and variables the app was built from; dropped last, which
    /// deletes the queues, the exchange and the database.
    pub env: ServiceEnv,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|env| env).await
    }

    /// Spawns with `tweak` applied to the variables (URLs, limits, timeouts), as an operator
    /// would set them.
    pub async fn spawn_with(tweak: impl FnOnce(ServiceEnv) -> ServiceEnv) -> TestApp {
        let env = ServiceEnv::new()
            .await
            .set("JWT_SECRET", JWT_SECRET)
            .set("DATABASE_MAX_CONNECTIONS", "5")
            .set("AMQP_RECONNECT_MAX_MS", "500")
            // Cheap hashes: these tests are about behaviour; the benchmark uses real costs.
            .set("ARGON2_M_COST", "1024")
            .set("ARGON2_T_COST", "1")
            .set("RATE_LIMIT_PER_SECOND", "1000")
            .set("RATE_LIMIT_BURST", "1000")
            // Concurrency tests fire more signups at once than the default queue takes; the
            // bound has tests of its own.
            .set("HASH_QUEUE_CAPACITY", "1000")
            // Likewise for failed logins (timing tests make many).
            .set("LOGIN_FAILURES_PER_ACCOUNT", "100000")
            .set("LOGIN_FAILURES_PER_IP", "100000");
        let env = tweak(env);
        let config = Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone()).await.expect("the app starts");
        let pool = env.db().pool().await;
        TestApp {
            addr: app.http_addr(),
            ops_addr: app.ops_addr(),
            app: Some(app),
            shutdown,
            http: reqwest::Client::new(),
            pool,
            env,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the operations port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_addr)
    }

    /// `GET` on the operations port.
    pub async fn ops_get(&self, path: &str) -> Response {
        self.http.get(self.ops_url(path)).send().await.unwrap()
    }

    /// Where `get_user` requests go (`USER_QUEUE`).
    pub fn user_queue(&self) -> &str {
        self.env.user_queue()
    }

    /// Where `user.created` goes (`EVENTS_EXCHANGE`).
    pub fn events_exchange(&self) -> &str {
        self.env.events_exchange()
    }

    /// The broker itself (not a proxy a test put in front of it).
    pub fn broker_url(&self) -> &str {
        self.env.amqp_url()
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
        let user: Value = response.json().await.unwrap();
        assert_eq!(user["email"], email.trim_matches(' '), "{user}");
        assert_eq!(user["name"], name.trim_matches(' '), "{user}");
        assert!(user["id"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{user}");
        user
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
        let token = body["accessToken"].as_str().unwrap().to_owned();
        assert_eq!(crate::tokens::claims(&token)["sub"], user["id"], "the token is the new user's");
        (user, token)
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
            let response = self.http.get(self.ops_url("/readyz")).send().await.map_err(|e| e.to_string())?;
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
    }
}
