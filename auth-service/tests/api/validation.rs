//! Bad input is answered clearly as problem+json (400/413/415/422), never 500.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::test_app::{PASSWORD, TestApp};

/// Asserts a problem+json response with `status`; returns the problem.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem without {member}: {body}");
    }
    body
}

/// The field names of a 422 problem, in order.
fn fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|error| error["field"].as_str().unwrap().to_owned()).collect()
}

async fn raw_signup(app: &TestApp, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Response {
    let mut request = app.http.post(app.url("/auth/signup")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}).to_string();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let response = raw_signup(&app, content_type, body.clone()).await;
        problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let response = raw_signup(&app, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(response.status(), StatusCode::CREATED, "parameters on the JSON type are fine");
    let user: Value = response.json().await.unwrap();
    assert_eq!((user["email"].as_str(), user["name"].as_str()), (Some("ada@example.com"), Some("Ada")));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for body in ["", "{", "{\"email\": }", "not json", "{\"email\":\"a@b.co\"} trailing", "{\"email\":\"a@b.co\",}"] {
        let response = raw_signup(&app, Some("application/json"), body).await;
        let problem = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["type"], "urn:problem:auth-service:malformed-json", "{body}");
    }
}

#[tokio::test]
async fn invalid_fields_are_422_naming_every_field() {
    let app = TestApp::spawn().await;

    let response = app.post_json("/auth/signup", &json!({"email": "nope", "password": "short", "name": "   "})).await;

    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&problem), ["email", "password", "name"]);
    for error in problem["errors"].as_array().unwrap() {
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    assert!(!problem.to_string().contains("short"), "the password is not echoed: {problem}");
}

#[tokio::test]
async fn missing_fields_are_422() {
    let app = TestApp::spawn().await;
    let response = app.post_json("/auth/signup", &json!({})).await;
    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&problem), ["email", "password", "name"]);
    assert_eq!(problem["errors"][0]["message"], "is required");

    let response = app.post_json("/auth/signup", &json!({"email": null, "password": PASSWORD, "name": "Ada"})).await;
    assert_eq!(fields(&problem_of(response).await), ["email"]);
}

async fn problem_of(response: Response) -> Value {
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await
}

#[tokio::test]
async fn unknown_fields_are_rejected() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "isAdmin": true});
    let problem = problem_of(app.post_json("/auth/signup", &body).await).await;
    assert_eq!(fields(&problem), ["isAdmin"]);
}

#[tokio::test]
async fn wrong_types_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "ada@example.com", "password": 12345678, "name": "Ada"});
    assert_eq!(fields(&problem_of(app.post_json("/auth/signup", &body).await).await), ["password"]);
    let problem = problem_of(app.post_json("/auth/signup", &json!(["ada@example.com"])).await).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn length_limits_are_enforced_at_their_boundaries() {
    let app = TestApp::spawn().await;
    let local = "a".repeat(64);
    let email_254 = format!("{local}@{}.{}.{}.com", "b".repeat(60), "c".repeat(60), "d".repeat(63));
    let email_255 = format!("{local}@{}.{}.{}.e.com", "b".repeat(60), "c".repeat(60), "d".repeat(62));
    assert_eq!((email_254.len(), email_255.len()), (254, 255));
    let cases = [
        (email_254.as_str(), "p".repeat(8), "n".repeat(100), None),
        ("x1@example.com", "p".repeat(128), "N".to_owned(), None),
        (email_255.as_str(), PASSWORD.to_owned(), "Ada".to_owned(), Some("email")),
        ("x2@example.com", "p".repeat(7), "Ada".to_owned(), Some("password")),
        ("x3@example.com", "p".repeat(129), "Ada".to_owned(), Some("password")),
        ("x4@example.com", PASSWORD.to_owned(), "n".repeat(101), Some("name")),
        ("x5@example.com", PASSWORD.to_owned(), String::new(), Some("name")),
    ];
    for (email, password, name, invalid) in cases {
        let response =
            app.post_json("/auth/signup", &json!({"email": email, "password": password, "name": name})).await;
        match invalid {
            None => {
                assert_eq!(response.status(), StatusCode::CREATED, "{email} / {} / {}", password.len(), name.len());
                let user: Value = response.json().await.unwrap();
                assert_eq!((user["email"].as_str(), user["name"].as_str()), (Some(email), Some(name.as_str())));
            }
            Some(field) => assert_eq!(fields(&problem_of(response).await), [field]),
        }
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = TestApp::spawn_with(|env| env.set("BODY_LIMIT_BYTES", (16 * 1024).to_string())).await;
    let name = "n".repeat(17 * 1024);
    let body = json!({"email": "ada@example.com", "password": PASSWORD, "name": name}).to_string();

    let response = raw_signup(&app, Some("application/json"), body.clone()).await;
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        body.into_bytes().chunks(1024).map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec())).collect::<Vec<_>>(),
    );
    let response = raw_signup(&app, Some("application/json"), reqwest::Body::wrap_stream(stream)).await;
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = TestApp::spawn().await;
    problem(app.get("/nowhere", None).await, StatusCode::NOT_FOUND).await;
    problem(app.get("/auth/signup", None).await, StatusCode::METHOD_NOT_ALLOWED).await;
}
