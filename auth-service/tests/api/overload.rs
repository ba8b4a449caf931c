//! Overload: a full hashing queue, the in-flight limit and the request timeout are each
//! answered at once with 503 problem+json and `Retry-After`, and the service keeps serving.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use tests::{BrokerProbe, DEADLINE};

use crate::{test_app::TestApp, validation::problem};

/// A request that stays in flight: `GET /users/me` whose `get_user` waits on a queue nobody
/// consumes (until `RPC_TIMEOUT_MS`, set long by the callers).
async fn hanging_request(app: &TestApp, token: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let probe = BrokerProbe::connect(app.broker_url()).await;
    probe.declare_queue(app.user_queue()).await;
    let (http, url, token) = (app.http.clone(), app.url("/users/me"), token.to_owned());
    tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap() })
}

/// A valid token for a made-up user (no signup: these apps are configured to shed it).
fn a_token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"sub": uuid::Uuid::new_v4(), "iat": now, "exp": now + 600});
    crate::tokens::sign(jsonwebtoken::Algorithm::HS256, &claims)
}

async fn assert_shed(response: reqwest::Response, kind: &str) {
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["type"], format!("urn:problem:auth-service:{kind}"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hashing_queue_answers_503_with_retry_after_at_once() {
    // One hashing thread, nothing may wait, and hashes slow enough (~0.1–0.5 s here) that the
    // burst arrives while the first one runs.
    // (Test builds are unoptimised: this cost takes ~0.1–1 s per hash here.)
    let app = TestApp::spawn_with(|env| {
        env.set("HASH_CONCURRENCY", "1")
            .set("HASH_QUEUE_CAPACITY", "0")
            .set("ARGON2_M_COST", "4096")
            .set("ARGON2_T_COST", "2")
            .set("REQUEST_TIMEOUT_MS", "120000")
    })
    .await;

    let app_ref = &app;
    let signups = (0..8).map(|i| async move {
        let app = app_ref;
        let started = Instant::now();
        let response = app.signup(&format!("burst{i}@example.com"), "Burst").await;
        (response, started.elapsed())
    });
    let results = join_all(signups).await;

    let (mut created, mut shed, mut slowest_shed) = (0, 0, Duration::ZERO);
    let mut hash_time = Duration::MAX;
    for (response, took) in results {
        match response.status() {
            StatusCode::CREATED => {
                created += 1;
                hash_time = hash_time.min(took);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                slowest_shed = slowest_shed.max(took);
                assert_shed(response, "overloaded").await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert!(created >= 1 && shed >= 1, "created {created}, shed {shed}");
    let accounts: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM credentials"#).fetch_one(&app.pool).await.unwrap();
    assert_eq!(accounts, created as i64, "a shed signup created nothing");
    // Shed at once, not after waiting for a hash: faster than the fastest accepted signup.
    assert!(slowest_shed < hash_time, "shed after {slowest_shed:?}, a signup takes {hash_time:?}");

    // Once the burst is over, signups and logins are accepted again.
    app.create_user("after@example.com", "After").await;
    assert_eq!(app.login("after@example.com", crate::test_app::PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503() {
    let app = TestApp::spawn_with(|env| env.set("MAX_IN_FLIGHT", "1").set("RPC_TIMEOUT_MS", "20000")).await;
    app.wait_ready(StatusCode::OK).await;
    let token = a_token();
    let hanging = hanging_request(&app, &token).await;

    // Once the hanging request holds the one slot, everything else on the public port is shed.
    let shed = tests::eventually(DEADLINE, || async {
        let response = app.get("/healthz", None).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE { Ok(response) } else { Err(response.status()) }
    })
    .await;
    assert_shed(shed, "overloaded").await;
    assert_shed(app.signup("bob@example.com", "Bob").await, "overloaded").await;
    // The operations port has no such limit.
    assert_eq!(app.ops_get("/healthz").await.status(), StatusCode::OK);

    hanging.abort();
    tests::eventually(DEADLINE, || async {
        let status = app.get("/healthz", None).await.status();
        if status == StatusCode::OK { Ok(()) } else { Err(status) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_past_the_timeout_is_answered_503() {
    let app = TestApp::spawn_with(|env| env.set("REQUEST_TIMEOUT_MS", "300").set("RPC_TIMEOUT_MS", "20000")).await;
    app.wait_ready(StatusCode::OK).await;
    let token = a_token();

    let started = Instant::now();
    let response = hanging_request(&app, &token).await.await.unwrap();
    let took = started.elapsed();

    assert_shed(response, "timeout").await;
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(10), "answered after {took:?}");
    let body: Value = app.get("/healthz", None).await.json().await.unwrap();
    assert_eq!(body["status"], "ok", "the service keeps serving");
}
