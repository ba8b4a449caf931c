//! `POST /auth/login`: verify the password, issue an access token.
//!
//! Every bad credential gets the same 401 body: unknown email, wrong password, an email that
//! cannot even be an address. The unknown-account path verifies against a dummy hash, so it
//! takes as long as a wrong password.

use axum::{Json, extract::State};
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

/// The login request. Both fields are required; unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(required = true, nullable = false, format = Email, example = "ada@example.com")]
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
        (status = 429, description = "Rate limited; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
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
    let account = match Email::parse(&raw_email) {
        Ok(email) => credentials::find_by_email(&state.db, &email).await?,
        Err(_) => None,
    };
    let stored = account.as_ref().map(|account| PasswordDigest(account.password_hash.clone()));
    let verified = state.hasher.verify(Password::offered(raw_password), stored).await?;
    let Some(account) = account.filter(|_| verified) else {
        metrics::counter!("logins_total", "outcome" => "rejected").increment(1);
        return Err(ApiError::InvalidCredentials);
    };
    let token = state.tokens.issue(account.id).map_err(ApiError::Signing)?;
    metrics::counter!("logins_total", "outcome" => "accepted").increment(1);
    tracing::info!(user_id = %account.id, "login");
    Ok(Json(TokenBody { access_token: token.token, token_type: "Bearer", expires_in: token.expires_in.as_secs() }))
}
