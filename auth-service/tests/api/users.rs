//! GET /users/{id} over the real broker to a stub user-service: every RPC outcome maps to
//! its status (200, 404, 400, 504, 503, 502), and the request's trace reaches the service.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tests::{ChaosProxy, DEADLINE, ServiceEnv};
use uuid::Uuid;

use crate::{
    test_app::TestApp,
    user_service_stub::{SLOW_ID, UserServiceStub, user},
    validation::problem,
};

/// An app, a stub user-service on its queue, and a token.
async fn setup(tweak: impl FnOnce(ServiceEnv) -> ServiceEnv) -> (TestApp, UserServiceStub, String) {
    let app = TestApp::spawn_with(tweak).await;
    let stub = UserServiceStub::start(app.broker_url(), app.user_queue()).await;
    app.wait_ready(StatusCode::OK).await;
    let (_, token) = app.user_with_token("caller@example.com").await;
    (app, stub, token)
}

#[tokio::test]
async fn a_known_user_is_200_with_the_profile() {
    let (app, stub, token) = setup(|env| env).await;
    let id = Uuid::new_v4();
    stub.directory.add(user(id, "grace@example.com", "Grace"));

    let response = app.get(&format!("/users/{id}"), Some(&token)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"id": id, "email": "grace@example.com", "name": "Grace", "createdAt": "2024-01-01T00:07:00.123Z"})
    );
}

#[tokio::test]
async fn me_is_the_callers_own_profile() {
    let (app, stub, _) = setup(|env| env).await;
    let (me, token) = app.user_with_token("me@example.com").await;
    stub.directory.add_json(&me);
    let response = app.get("/users/me", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), me);
}

#[tokio::test]
async fn an_unknown_user_is_404() {
    let (app, _stub, token) = setup(|env| env).await;
    let response = app.get(&format!("/users/{}", Uuid::new_v4()), Some(&token)).await;
    let problem = problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(problem["detail"], "user not found");
}

#[tokio::test]
async fn a_malformed_id_is_400_at_the_edge() {
    let (app, _stub, token) = setup(|env| env).await;
    // Not UUIDs in the hyphenated form the OpenAPI document states (the simple, braced and URN
    // forms included): rejected before any RPC.
    let simple = Uuid::new_v4().simple().to_string();
    let braced = format!("{{{}}}", Uuid::new_v4());
    for id in ["not-a-uuid", simple.as_str(), braced.as_str()] {
        let response = app.get(&format!("/users/{id}"), Some(&token)).await;
        let problem = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["type"], "urn:problem:auth-service:bad-path", "{id}");
        assert!(problem["detail"].as_str().unwrap().contains("must be a UUID"), "{problem}");
    }
}

#[tokio::test]
async fn a_slow_user_service_is_504() {
    let (app, _stub, token) = setup(|env| env.set("RPC_TIMEOUT_MS", "300")).await;
    let started = std::time::Instant::now();
    let response = app.get(&format!("/users/{SLOW_ID}"), Some(&token)).await;
    problem(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the deadline, not with the late reply");
}

#[tokio::test]
async fn a_service_without_the_handler_is_502() {
    let app = TestApp::spawn().await;
    let _stub = UserServiceStub::start_without_handlers(app.broker_url(), app.user_queue()).await;
    app.wait_ready(StatusCode::OK).await;
    let (_, token) = app.user_with_token("caller@example.com").await;
    let response = app.get(&format!("/users/{}", Uuid::new_v4()), Some(&token)).await;
    problem(response, StatusCode::BAD_GATEWAY).await;
}

#[tokio::test]
async fn an_unreachable_broker_is_503() {
    let proxy = ChaosProxy::in_front_of(&tests::amqp_url().await).await;
    let amqp_url = proxy.url_for(&tests::amqp_url().await);
    let (app, _stub, token) = setup(|env| env.set("AMQP_URL", amqp_url)).await;
    let id = Uuid::new_v4();

    proxy.cut().await;

    tests::eventually(DEADLINE, || async {
        let status = app.get(&format!("/users/{id}"), Some(&token)).await.status();
        if status == StatusCode::SERVICE_UNAVAILABLE { Ok(()) } else { Err(status) }
    })
    .await;
    problem(app.get(&format!("/users/{id}"), Some(&token)).await, StatusCode::SERVICE_UNAVAILABLE).await;

    proxy.restore();
    tests::eventually(DEADLINE, || async {
        let status = app.get(&format!("/users/{id}"), Some(&token)).await.status();
        if status == StatusCode::NOT_FOUND { Ok(()) } else { Err(status) }
    })
    .await;
}

#[tokio::test]
async fn the_request_trace_reaches_the_user_service() {
    let (app, stub, token) = setup(|env| env).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let response = app
        .http
        .get(app.url(&format!("/users/{}", Uuid::new_v4())))
        .bearer_auth(&token)
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let traces = stub.directory.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].trace_id(), trace_id);
}
