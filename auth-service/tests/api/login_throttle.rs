//! Failed logins throttled per account and per client IP: 429 with `Retry-After`, the same
//! answer whether or not the account exists.

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    test_app::{PASSWORD, TestApp},
    validation::problem,
};

/// The throttled answer: its `Retry-After` (seconds) and problem body.
async fn throttled(response: reqwest::Response) -> (u64, Value) {
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    (retry_after, problem(response, StatusCode::TOO_MANY_REQUESTS).await)
}

#[tokio::test]
async fn an_account_is_throttled_after_its_failures_whether_or_not_it_exists() {
    let app = TestApp::spawn_with(|env| {
        env.set("LOGIN_FAILURES_PER_ACCOUNT", "3")
            .set("LOGIN_FAILURES_PER_IP", "1000")
            .set("LOGIN_FAILURE_WINDOW_SECS", "60")
    })
    .await;
    app.create_user("ada@example.com", "Ada").await;

    // Differently spelled, one account.
    for email in ["ada@example.com", " ADA@example.com", "Ada@Example.com"] {
        problem(app.login(email, "wrong password").await, StatusCode::UNAUTHORIZED).await;
    }
    for _ in 0..3 {
        problem(app.login("nobody@example.com", "wrong password").await, StatusCode::UNAUTHORIZED).await;
    }

    let (known_wait, known) = throttled(app.login("ada@example.com", "wrong password").await).await;
    let (unknown_wait, unknown) = throttled(app.login("nobody@example.com", "wrong password").await).await;
    assert_eq!(known, unknown, "no oracle: the same answer for a registered and an unknown email");
    assert_eq!(known["type"], "urn:problem:auth-service:login-throttled");
    assert!((58..=60).contains(&known_wait) && (58..=60).contains(&unknown_wait), "{known_wait} {unknown_wait}");

    // Even the right password waits for the window; other accounts are not affected.
    throttled(app.login("ada@example.com", PASSWORD).await).await;
    app.create_user("bob@example.com", "Bob").await;
    let response = app.login("bob@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let token: Value = response.json().await.unwrap();
    assert_eq!(token["tokenType"], "Bearer");
}

#[tokio::test]
async fn a_success_clears_the_accounts_failures() {
    let app =
        TestApp::spawn_with(|env| env.set("LOGIN_FAILURES_PER_ACCOUNT", "2").set("LOGIN_FAILURES_PER_IP", "1000"))
            .await;
    app.create_user("ada@example.com", "Ada").await;
    for _ in 0..3 {
        problem(app.login("ada@example.com", "wrong password").await, StatusCode::UNAUTHORIZED).await;
        // Not reached: the failures do not add up across the successes between them.
        assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_client_is_throttled_after_its_failures_across_accounts() {
    let app =
        TestApp::spawn_with(|env| env.set("LOGIN_FAILURES_PER_ACCOUNT", "100").set("LOGIN_FAILURES_PER_IP", "4")).await;
    for i in 0..4 {
        let response = app.login(&format!("guess{i}@example.com"), "wrong password").await;
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let (_, body) = throttled(app.login("guess5@example.com", "wrong password").await).await;
    assert_eq!(body["type"], "urn:problem:auth-service:login-throttled");
}
