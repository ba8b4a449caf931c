//! POST /auth/signup: the account, its outbox row, and one account per email.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::test_app::{PASSWORD, TestApp};

/// `toISOString` output: milliseconds and `Z`.
pub fn is_js_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() == 24
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

#[tokio::test]
async fn signup_answers_201_with_the_user() {
    let app = TestApp::spawn().await;

    let response = app.signup("  ada@example.com ", "  Ada Lovelace ").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/users/{id}"));
    assert_eq!(body["email"], "ada@example.com", "trimmed");
    assert_eq!(body["name"], "Ada Lovelace", "trimmed");
    assert!(is_js_date(body["createdAt"].as_str().unwrap()), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 4, "no other fields (no hash, no password): {body}");
}

#[tokio::test]
async fn signup_stores_an_argon2id_hash_and_an_outbox_row_in_one_go() {
    let app = TestApp::spawn().await;

    let body = app.create_user("ada@example.com", "Ada").await;

    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let account = sqlx::query!("SELECT email, password_hash FROM credentials WHERE id = $1", id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(account.email, "ada@example.com");
    assert!(account.password_hash.starts_with("$argon2id$"), "{}", account.password_hash);
    assert!(!account.password_hash.contains(PASSWORD));
    let event = sqlx::query!("SELECT pattern, payload, traceparent FROM outbox").fetch_one(&app.pool).await.unwrap();
    assert_eq!(event.pattern, "user.created");
    assert_eq!(event.payload, body, "the event carries exactly the user the client got");
    assert!(event.traceparent.is_some_and(|value| shared::TraceContext::parse(&value).is_some()));
}

#[tokio::test]
async fn duplicate_email_is_rejected_with_409() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", "Ada").await;

    let response = app.signup("ada@example.com", "Other Ada").await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 409);
    assert_eq!(problem["type"], "urn:problem:auth-service:email-taken");
    assert_eq!(problem["title"], "Email already registered");
    assert!(problem.get("errors").is_none(), "{problem}");
    assert_eq!(events(&app).await, 1, "the rejected signup wrote no event");
}

#[tokio::test]
async fn emails_differing_only_in_case_are_the_same_account() {
    let app = TestApp::spawn().await;
    app.create_user("Ada.Lovelace@Example.com", "Ada").await;

    let response = app.signup("ada.lovelace@EXAMPLE.COM", "Ada").await;

    let problem = crate::validation::problem(response, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "urn:problem:auth-service:email-taken");
    assert_eq!(problem["detail"], "An account with this email already exists.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_signups_with_one_email_create_exactly_one_account() {
    let app = TestApp::spawn().await;

    let attempts = (0..20).map(|i| {
        let email = if i % 2 == 0 { "race@example.com" } else { "RACE@example.com" };
        app.signup(email, "Racer")
    });
    let responses = join_all(attempts).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|response| response.status()).collect();

    let created = statuses.iter().filter(|status| **status == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|status| **status == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}");
    assert_eq!((accounts(&app).await, events(&app).await), (1, 1));
    for response in responses {
        let body: Value = response.json().await.unwrap();
        if body["id"].is_string() {
            assert_eq!(body["email"].as_str().map(str::to_lowercase).as_deref(), Some("race@example.com"));
            assert_eq!(body["name"], "Racer");
        } else {
            assert_eq!(body["type"], "urn:problem:auth-service:email-taken", "{body}");
        }
    }
}

async fn accounts(app: &TestApp) -> i64 {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM credentials"#).fetch_one(&app.pool).await.unwrap()
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#).fetch_one(&app.pool).await.unwrap()
}
