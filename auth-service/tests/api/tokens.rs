//! Bearer tokens on /users/*: valid ones pass; missing, expired, tampered, unsigned
//! (`alg: none`) and other-algorithm tokens get 401 with a `WWW-Authenticate: Bearer` challenge.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    test_app::{JWT_SECRET, TestApp},
    user_service_stub::UserServiceStub,
    validation::problem,
};

/// The claims of a token, read without verification (tests only).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64url_decode(payload)).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs `claims` with the test key, adding this service's `iss` and `aud` unless given.
pub fn sign(algorithm: Algorithm, claims: &Value) -> String {
    let mut claims = claims.clone();
    for (claim, value) in [("iss", "auth-service"), ("aud", "api")] {
        if claims.get(claim).is_none() {
            claims[claim] = json!(value);
        }
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn assert_rejected(app: &TestApp, token: Option<&str>, what: &str) {
    let response = app.get("/users/me", token).await;
    let challenge = response.headers().get("www-authenticate").map(|value| value.to_str().unwrap().to_owned());
    assert!(challenge.as_deref().is_some_and(|value| value.starts_with("Bearer")), "{what}: {challenge:?}");
    problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let app = TestApp::spawn().await;
    let stub = UserServiceStub::start(app.broker_url(), app.user_queue()).await;
    app.wait_ready(StatusCode::OK).await;
    let (user, token) = app.user_with_token("ada@example.com").await;
    stub.directory.add_json(&user);

    let response = app.get("/users/me", Some(&token)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), user);
}

#[tokio::test]
async fn missing_and_malformed_authorization_is_401() {
    let app = TestApp::spawn().await;
    assert_rejected(&app, None, "no header").await;
    assert_rejected(&app, Some("not-a-jwt"), "garbage").await;
    let response = app.http.get(app.url("/users/me")).header("authorization", "Basic YWRhOnB3").send().await.unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = TestApp::spawn().await;
    let (user, _) = app.user_with_token("ada@example.com").await;
    let token = sign(Algorithm::HS256, &json!({"sub": user["id"], "iat": now() - 120, "exp": now() - 1}));
    assert_rejected(&app, Some(&token), "expired").await;
}

#[tokio::test]
async fn a_tampered_token_is_401() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = claims(&token);
    claims["sub"] = json!(uuid::Uuid::new_v4());
    parts[1] = base64url_encode(claims.to_string().as_bytes());
    assert_rejected(&app, Some(&parts.join(".")), "tampered").await;

    let signature_flipped = format!("{}{}", &token[..token.len() - 2], if token.ends_with("AA") { "BB" } else { "AA" });
    assert_rejected(&app, Some(&signature_flipped), "bad signature").await;
}

#[tokio::test]
async fn unsigned_and_other_algorithm_tokens_are_401() {
    let app = TestApp::spawn().await;
    let (user, _) = app.user_with_token("ada@example.com").await;
    let claims = json!({"sub": user["id"], "iss": "auth-service", "aud": "api", "iat": now(), "exp": now() + 600});
    let body = base64url_encode(claims.to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = base64url_encode(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        assert_rejected(&app, Some(&format!("{header}.{body}.")), alg).await;
    }
    // Same key, stronger hash: still not the algorithm this service issues.
    assert_rejected(&app, Some(&sign(Algorithm::HS512, &claims)), "HS512").await;
    // Right key and algorithm but no usable subject.
    assert_rejected(&app, Some(&sign(Algorithm::HS256, &json!({"sub": "ada", "exp": now() + 600}))), "bad sub").await;
    assert_rejected(&app, Some(&sign(Algorithm::HS256, &json!({"sub": user["id"]}))), "no exp").await;
}

#[tokio::test]
async fn tokens_of_another_issuer_or_audience_are_401() {
    let app = TestApp::spawn().await;
    let stub = UserServiceStub::start(app.broker_url(), app.user_queue()).await;
    app.wait_ready(StatusCode::OK).await;
    let (user, _) = app.user_with_token("ada@example.com").await;
    stub.directory.add_json(&user);
    let claims = |extra: Value| {
        let mut claims = json!({"sub": user["id"], "iat": now(), "exp": now() + 600});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        claims
    };

    // The control: this service's issuer and audience are accepted.
    let good = sign(Algorithm::HS256, &claims(json!({})));
    assert_eq!(app.get("/users/me", Some(&good)).await.status(), StatusCode::OK);
    for (extra, what) in [
        (json!({"iss": "someone-else"}), "another issuer"),
        (json!({"aud": "admin"}), "another audience"),
        (json!({"aud": ["admin", "billing"]}), "other audiences"),
    ] {
        assert_rejected(&app, Some(&sign(Algorithm::HS256, &claims(extra))), what).await;
    }
    // Without the claims at all (`sign` adds them only when absent: remove them by hand).
    for claim in ["iss", "aud"] {
        let mut body = claims(json!({"iss": "auth-service", "aud": "api"}));
        body.as_object_mut().unwrap().remove(claim);
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &body,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        assert_rejected(&app, Some(&token), claim).await;
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, byte)| n | u32::from(*byte) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let values: Vec<u32> = text.bytes().map(|c| ALPHABET.iter().position(|a| *a == c).unwrap() as u32).collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i) & 255) as u8);
        }
    }
    out
}
