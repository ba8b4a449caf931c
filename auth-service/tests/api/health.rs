//! Operations routes on the operations port (liveness, readiness following Postgres and the
//! broker, metrics), only liveness on the public port; bounded metric labels; and the request
//! id every response carries.

use reqwest::StatusCode;
use serde_json::Value;
use tests::ChaosProxy;

use crate::test_app::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_everything_is_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.ops_get("/healthz").await.status(), StatusCode::OK);
    app.wait_ready(StatusCode::OK).await;
    let body: Value = app.ops_get("/readyz").await.json().await.unwrap();
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
    let body: Value = app.ops_get("/readyz").await.json().await.unwrap();
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
    let body: Value = app.ops_get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "down");
    let response = app.signup("ada@example.com", "Ada").await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = crate::validation::problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["type"], "urn:problem:auth-service:database-unavailable", "a database outage is 503, not 500");

    proxy.restore();
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(app.signup("ada@example.com", "Ada").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format_on_the_ops_port_only() {
    let app = TestApp::spawn().await;
    app.get("/healthz", None).await;
    let response = app.ops_get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");

    for path in ["/metrics", "/readyz"] {
        let problem = crate::validation::problem(app.get(path, None).await, StatusCode::NOT_FOUND).await;
        assert_eq!(problem["type"], "urn:problem:auth-service:not-found", "{path} on the public port");
    }
}

/// The `method` label values of `http_requests_total` in a metrics rendering.
fn method_labels(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .filter_map(|line| line.split("method=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn made_up_methods_add_at_most_one_metric_label_value() {
    let app = TestApp::spawn().await;
    // The recorder is process-wide: other tests' requests add only known methods.
    let before = method_labels(&app.ops_get("/metrics").await.text().await.unwrap());

    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/auth/signup" } else { "/nowhere" };
        let response = app.http.request(method, app.url(path)).send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }

    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    let after = method_labels(&metrics);
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.len() <= 1, "new method label values: {new:?}");
    assert!(after.iter().all(|method| ["GET", "HEAD", "POST", "other"].contains(&method.as_str())), "{after:?}");
    assert!(metrics.contains("method=\"other\""), "the made-up methods were counted as other");
    let routes: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{") && line.contains("method=\"other\""))
        .filter_map(|line| line.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.iter().all(|route| ["/auth/signup", "unmatched"].contains(route)), "{routes:?}");
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
