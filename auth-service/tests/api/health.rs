//! Operations routes on the API port: liveness, readiness following Postgres and the
//! broker, metrics; and the request id every response carries.

use reqwest::StatusCode;
use serde_json::Value;
use tests::ChaosProxy;

use crate::test_app::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_everything_is_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    app.wait_ready(StatusCode::OK).await;
    let body: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(body["checks"], serde_json::json!({"database": "up", "broker": "up"}));
}

#[tokio::test]
async fn readyz_follows_the_broker() {
    let broker_url = tests::amqp_url().await;
    let proxy = ChaosProxy::in_front_of(&broker_url).await;
    let proxied = proxy.url_for(&broker_url);
    let app = TestApp::spawn_with(|env| env.set("AMQP_URL", proxied)).await;
    app.wait_ready(StatusCode::OK).await;

    proxy.cut().await;
    app.wait_ready(StatusCode::SERVICE_UNAVAILABLE).await;
    let body: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(body["checks"]["broker"], "down");
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK, "alive while not ready");

    proxy.restore();
    app.wait_ready(StatusCode::OK).await;
}

#[tokio::test]
async fn readyz_follows_postgres() {
    let server = tests::postgres_url().await;
    let proxy = ChaosProxy::in_front_of(&server).await;
    let app = TestApp::spawn_with(|env| {
        let url = proxy.url_for(&env.db().url);
        env.set("DATABASE_URL", url)
    })
    .await;
    app.wait_ready(StatusCode::OK).await;

    proxy.cut().await;
    app.wait_ready(StatusCode::SERVICE_UNAVAILABLE).await;
    let body: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "down");
    let response = app.signup("ada@example.com", "Ada").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "a database outage is 503, not 500");

    proxy.restore();
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(app.signup("ada@example.com", "Ada").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let app = TestApp::spawn().await;
    app.get("/healthz", None).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let generated = app.get("/nowhere", None).await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app.http.get(app.url("/healthz")).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "req-42");

    let oversized = "x".repeat(200);
    let replaced = app.http.get(app.url("/healthz")).header("x-request-id", &oversized).send().await.unwrap();
    assert_ne!(replaced.headers()["x-request-id"], oversized.as_str());
}
