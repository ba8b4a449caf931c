//! `GET /users/{id}` against the real user-service (both services in-process, built by the
//! `App::build` their binaries run, on one test's own queues and databases): every outcome
//! of the RPC becomes the HTTP status the auth-service README promises.
//!
//! | the user-service … | auth-service answers |
//! | --- | --- |
//! | knows the user | 200 with the profile |
//! | does not know it | 404 |
//! | cannot reach its database (answers its 503 error object) | 502 |
//! | is not consuming (stopped: the request waits in its queue) | 504 at `RPC_TIMEOUT_MS` |
//! | cannot be reached: auth-service's own broker link is down | 503 |
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::CancellationToken;
use tests::{ChaosProxy, DEADLINE, ServiceEnv};
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery";
const RPC_TIMEOUT: Duration = Duration::from_millis(1500);

/// auth-service and user-service of one test, each link the test may cut behind a proxy.
struct Pair {
    http: reqwest::Client,
    auth_url: String,
    token: String,
    caller_id: String,
    /// auth-service → RabbitMQ.
    auth_link: ChaosProxy,
    /// user-service → its Postgres.
    user_db_link: ChaosProxy,
    user_stop: CancellationToken,
    user_task: Option<JoinHandle<()>>,
    auth_stop: CancellationToken,
    auth_task: Option<JoinHandle<()>>,
    envs: Vec<ServiceEnv>,
}

impl Pair {
    /// Both services, then a signed-up caller whose profile the user-service has projected.
    async fn start() -> Pair {
        let auth_env = ServiceEnv::new()
            .await
            .set("JWT_SECRET", "a users-route test secret of at least 32 bytes")
            .set("RATE_LIMIT_PER_SECOND", "1000")
            .set("RATE_LIMIT_BURST", "1000")
            .set("ARGON2_M_COST", "1024")
            .set("ARGON2_T_COST", "1")
            .set("RPC_TIMEOUT_MS", RPC_TIMEOUT.as_millis().to_string())
            .set("AMQP_RECONNECT_MAX_MS", "500");
        let users_env = auth_env.sibling().await.set("DATABASE_TIMEOUT_MS", "300");
        let amqp_url = auth_env.lookup("AMQP_URL").unwrap();
        let auth_link = ChaosProxy::in_front_of(&amqp_url).await;
        let auth_env = auth_env.set("AMQP_URL", auth_link.url_for(&amqp_url));
        let user_db_url = users_env.lookup("DATABASE_URL").unwrap();
        let user_db_link = ChaosProxy::in_front_of(&user_db_url).await;
        let users_env = users_env.set("DATABASE_URL", user_db_link.url_for(&user_db_url));

        let user_stop = CancellationToken::new();
        let user_config = user_service::Config::from_lookup(|name| users_env.lookup(name)).unwrap();
        let user = user_service::App::build(user_config, user_stop.clone()).await.unwrap();
        assert!(user.wait_ready(DEADLINE).await, "user-service did not become ready");
        let auth_stop = CancellationToken::new();
        let auth_config = auth_service::Config::from_lookup(|name| auth_env.lookup(name)).unwrap();
        let auth = auth_service::App::build(auth_config, auth_stop.clone()).await.unwrap();
        let auth_url = format!("http://{}", auth.http_addr());

        let http = reqwest::Client::new();
        let email = format!("{}@example.com", tests::unique("caller"));
        let signup = json!({"email": email, "password": PASSWORD, "name": "Ada"});
        let response = http.post(format!("{auth_url}/auth/signup")).json(&signup).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        let login = json!({"email": email, "password": PASSWORD});
        let response = http.post(format!("{auth_url}/auth/login")).json(&login).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let session: Value = response.json().await.unwrap();
        let pair = Pair {
            http,
            auth_url,
            token: session["accessToken"].as_str().unwrap().to_owned(),
            caller_id: created["id"].as_str().unwrap().to_owned(),
            auth_link,
            user_db_link,
            user_stop,
            user_task: Some(tokio::spawn(user.run_until_stopped())),
            auth_stop,
            auth_task: Some(tokio::spawn(auth.run_until_stopped())),
            envs: vec![auth_env, users_env],
        };
        // The projection is eventually consistent: wait for the caller's own profile.
        pair.eventually_status(&pair.caller_id, StatusCode::OK).await;
        pair
    }

    async fn get(&self, id: &str) -> (StatusCode, Value) {
        let url = format!("{}/users/{id}", self.auth_url);
        let response = self.http.get(url).bearer_auth(&self.token).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn eventually_status(&self, id: &str, want: StatusCode) -> Value {
        tests::eventually(DEADLINE, || async {
            let (status, body) = self.get(id).await;
            if status == want { Ok(body) } else { Err(format!("{status}: {body}")) }
        })
        .await
    }

    async fn stop_user_service(&mut self) {
        self.user_stop.cancel();
        if let Some(task) = self.user_task.take() {
            tokio::time::timeout(DEADLINE, task).await.expect("user-service stops in time").unwrap();
        }
    }

    /// Stops both services, then checks the envs (no dead letters) and removes their names.
    async fn finish(mut self) {
        self.stop_user_service().await;
        self.auth_stop.cancel();
        if let Some(task) = self.auth_task.take() {
            tokio::time::timeout(DEADLINE, task).await.expect("auth-service stops in time").unwrap();
        }
        for env in std::mem::take(&mut self.envs) {
            env.finish().await;
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.user_stop.cancel();
        self.auth_stop.cancel();
    }
}

/// The body of an `application/problem+json` answer: its `status` matches the HTTP one.
fn assert_problem(body: &Value, status: StatusCode) {
    assert_eq!(body["status"], json!(status.as_u16()), "{body}");
    assert!(body["type"].is_string() && body["title"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_user_is_200_and_an_unknown_one_404_from_the_real_user_service() {
    let pair = Pair::start().await;
    let (status, body) = pair.get(&pair.caller_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], json!(pair.caller_id));
    assert_eq!(body["name"], json!("Ada"));
    let (status, body) = pair.get(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_problem(&body, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], json!("user not found"), "the user-service's message is passed on");
    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_service_without_its_database_is_502_and_200_once_it_is_back() {
    let pair = Pair::start().await;
    pair.user_db_link.cut().await;
    // The user-service answers its own 503 error object within DATABASE_TIMEOUT_MS: a failure
    // of the remote service, hence a bad gateway, well before the RPC timeout.
    let started = Instant::now();
    let (status, body) = pair.get(&pair.caller_id).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_problem(&body, StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < RPC_TIMEOUT, "answered after {:?}, at the RPC timeout", started.elapsed());
    pair.user_db_link.restore();
    pair.eventually_status(&pair.caller_id, StatusCode::OK).await;
    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_user_service_is_504_at_the_rpc_timeout() {
    let mut pair = Pair::start().await;
    pair.stop_user_service().await;
    let started = Instant::now();
    let (status, body) = pair.get(&pair.caller_id).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_problem(&body, StatusCode::GATEWAY_TIMEOUT);
    assert!(elapsed >= RPC_TIMEOUT, "answered after {elapsed:?}, before the RPC timeout");
    assert!(elapsed < RPC_TIMEOUT + Duration::from_secs(3), "answered after {elapsed:?}");
    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_service_without_its_broker_link_is_503_and_200_once_it_is_back() {
    let pair = Pair::start().await;
    pair.auth_link.cut().await;
    let body = pair.eventually_status(&pair.caller_id, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_problem(&body, StatusCode::SERVICE_UNAVAILABLE);
    pair.auth_link.restore();
    pair.eventually_status(&pair.caller_id, StatusCode::OK).await;
    pair.finish().await;
}
