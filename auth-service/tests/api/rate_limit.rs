//! /auth/* is rate limited per client: past the burst, 429 problem+json with Retry-After.

use reqwest::StatusCode;
use serde_json::json;

use crate::{test_app::TestApp, validation::problem};

#[tokio::test]
async fn auth_requests_past_the_burst_are_429_with_retry_after() {
    let app = TestApp::spawn_with(|env| env.set("RATE_LIMIT_BURST", "3").set("RATE_LIMIT_PER_SECOND", "1")).await;
    // Requests rejected by validation still count, and are fast: the burst is spent well
    // within the one second it takes to earn a new token.
    let body = json!({});
    for path in ["/auth/login", "/auth/signup", "/auth/login"] {
        assert_eq!(app.post_json(path, &body).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let limited = app.post_json("/auth/signup", &body).await;

    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(limited.headers().contains_key("x-request-id"));
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // Other routes are not limited.
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}
