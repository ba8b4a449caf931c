//! `POST /auth/login`: verify the password, issue an access token.
//!
//! Every bad credential gets the same 401 body: unknown email, wrong password, an email that
//! cannot even be an address. The unknown-account path verifies against a dummy hash, so it
//! takes as long as a wrong password.
//!
//! Failed logins are throttled per email and per client IP ([`crate::login_throttle`]): past
//! the limit the answer is 429 with `Retry-After`, the same whether or not the account exists.
//! A full hashing queue is answered 503 with `Retry-After` at once.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    account::{Email, Password},
    credentials,
    error::{ApiError, FieldError, Problem},
    json::AppJson,
    password::PasswordDigest,
    state::AppState,
};

/// The login request. Both fields are required; unknown fields are rejected. Any strings are
/// accepted: a value that cannot be an account's is answered like a wrong password (401).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email, compared without surrounding spaces and case-insensitively.
    #[schema(required = true, nullable = false, example = "ada@example.com")]
    email: Option<String>,
    #[schema(required = true, nullable = false, format = Password, example = "correct horse battery")]
    password: Option<String>,
}

/// An OAuth2-style bearer token response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    /// An HS256 JWT; `sub` is the user id.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
}

/// Exchanges an email and password for an access token.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Authenticated.", body = TokenBody),
        (status = 400, description = "The body is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown email or wrong password (one message for both).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or has the wrong type.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or too many failed logins for this email or from this client; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "At capacity (hashing queue full, in-flight limit, timeout) or the database is unavailable; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppJson(request): AppJson<LoginRequest>,
) -> Result<Json<TokenBody>, ApiError> {
    let (raw_email, raw_password) = match (request.email, request.password) {
        (Some(email), Some(password)) => (email, password),
        (email, password) => {
            let missing = [("email", email.is_none()), ("password", password.is_none())];
            let errors =
                missing.iter().filter(|(_, absent)| *absent).map(|(field, _)| FieldError::new(*field, "is required"));
            return Err(ApiError::Validation(errors.collect()));
        }
    };
    let attempt = match state.throttle.attempt(&raw_email, peer.ip()) {
        Ok(attempt) => attempt,
        Err(throttled) => {
            metrics::counter!("logins_total", "outcome" => "throttled").increment(1);
            // Escaped and cut short: the email is whatever the client sent.
            let email: String = raw_email.chars().take(64).collect();
            tracing::warn!(email = %email.escape_debug(), client = %peer.ip(), "failed logins throttled");
            return Err(ApiError::LoginThrottled { retry_after_secs: throttled.retry_after_secs });
        }
    };
    let judged = async {
        let account = match Email::parse(&raw_email) {
            Ok(email) => credentials::find_by_email(&state.db, &email).await?,
            Err(_) => None,
        };
        let stored = account.as_ref().map(|account| PasswordDigest(account.password_hash.clone()));
        let verified = state.hasher.verify(Password::offered(raw_password), stored).await?;
        Ok::<_, ApiError>(account.filter(|_| verified))
    };
    let account = match judged.await {
        Ok(Some(account)) => {
            attempt.succeeded();
            account
        }
        Ok(None) => {
            drop(attempt);
            metrics::counter!("logins_total", "outcome" => "rejected").increment(1);
            return Err(ApiError::InvalidCredentials);
        }
        Err(error) => {
            attempt.not_judged();
            return Err(error);
        }
    };
    let token = state.tokens.issue(account.id).map_err(ApiError::Signing)?;
    metrics::counter!("logins_total", "outcome" => "accepted").increment(1);
    tracing::info!(user_id = %account.id, "login");
    Ok(Json(TokenBody { access_token: token.token, token_type: "Bearer", expires_in: token.expires_in.as_secs() }))
}
