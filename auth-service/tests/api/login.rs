//! POST /auth/login: a token for the right password, one 401 for every wrong credential.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    test_app::{PASSWORD, TestApp},
    validation::problem,
};

#[tokio::test]
async fn login_returns_a_bearer_token_for_the_user() {
    let app = TestApp::spawn_with(|env| env.set("JWT_TTL_SECS", "600")).await;
    let user = app.create_user("ada@example.com", "Ada").await;

    let response = app.login("ada@example.com", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 600);
    let token = body["accessToken"].as_str().unwrap();
    let claims = crate::tokens::claims(token);
    assert_eq!(claims["sub"], user["id"]);
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 600);
    assert_eq!(claims["iss"], "auth-service");
    assert_eq!(claims["aud"], "api");
}

#[tokio::test]
async fn login_matches_the_email_case_insensitively() {
    let app = TestApp::spawn().await;
    let user = app.create_user("Ada@Example.com", "Ada").await;
    let response = app.login("ada@EXAMPLE.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    let claims = crate::tokens::claims(body["accessToken"].as_str().unwrap());
    assert_eq!(claims["sub"], user["id"], "the token is the account's");
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some("auth-service"), Some("api")));
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", "Ada").await;

    let wrong_password = app.login("ada@example.com", "not the password").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;
    let not_an_email = app.login("nobody", PASSWORD).await;

    let mut bodies = Vec::new();
    for response in [wrong_password, unknown_email, not_an_email] {
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        bodies.push(problem(response, StatusCode::UNAUTHORIZED).await);
    }
    assert_eq!(bodies[0]["type"], "urn:problem:auth-service:invalid-credentials");
    assert_eq!(bodies[0]["detail"], "The email or password is incorrect.");
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
}

#[tokio::test]
async fn login_needs_both_fields() {
    let app = TestApp::spawn().await;
    let response = app.post_json("/auth/login", &json!({"email": "ada@example.com"})).await;
    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "password");
    let response = app.post_json("/auth/login", &json!({"email": "a@b.co", "password": "x", "remember": true})).await;
    let problem = crate::validation::problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "remember");
}
