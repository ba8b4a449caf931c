//! `POST /auth/signup`: parse, hash, then the credential and its `user.created` outbox row
//! in one transaction; 201 with the user.
//!
//! The event exists exactly when the account does: both rows commit together or not at all.
//! The broker is not involved in the request, so signup works while it is down; the relay
//! publishes the event when it can.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{TraceContext, contracts::UserCreated, wire::js_date};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    account::{Email, Password, UserName},
    credentials::{self, NewCredentials},
    error::{ApiError, FieldError, Problem},
    json::AppJson,
    outbox::NewEvent,
    state::AppState,
};

/// The signup request. Every field is required; unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// An email address, unique case-insensitively: at most 254 characters; surrounding spaces
    /// are removed; an ASCII dot-atom local part of at most 64 characters; a domain of at
    /// least two labels (letters, digits, inner hyphens; at most 63 characters each), the last
    /// one not all digits.
    #[schema(required = true, nullable = false, max_length = 254, example = "ada@example.com")]
    email: Option<String>,
    /// 8 to 128 characters, taken as is.
    #[schema(required = true, nullable = false, format = Password, min_length = 8, max_length = 128, example = "correct horse battery")]
    password: Option<String>,
    /// 1 to 100 characters, no control characters, not only spaces; surrounding spaces are
    /// removed.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 100, example = "Ada")]
    name: Option<String>,
}

/// A user's public profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    pub id: Uuid,
    #[schema(format = Email, example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada")]
    pub name: String,
    /// When the account was created, as JavaScript's `toISOString` renders it.
    #[serde(with = "js_date")]
    #[schema(value_type = String, format = DateTime, example = "2024-01-01T00:07:00.000Z")]
    pub created_at: DateTime<Utc>,
}

impl From<shared::contracts::User> for UserBody {
    fn from(user: shared::contracts::User) -> Self {
        Self { id: user.id, email: user.email, name: user.name, created_at: user.created_at }
    }
}

/// A signup that passed validation.
struct NewAccount {
    email: Email,
    password: Password,
    name: UserName,
}

impl NewAccount {
    /// Checks every field and reports all problems at once.
    fn parse(request: SignupRequest) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let email = required(&mut errors, "email", request.email, |raw| Email::parse(&raw));
        let password = required(&mut errors, "password", request.password, Password::parse);
        let name = required(&mut errors, "name", request.name, |raw| UserName::parse(&raw));
        match (email, password, name) {
            (Some(email), Some(password), Some(name)) => Ok(Self { email, password, name }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// Parses a required field, recording why it is missing or invalid.
fn required<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<String>,
    parse: impl FnOnce(String) -> Result<T, &'static str>,
) -> Option<T> {
    let Some(raw) = raw else {
        errors.push(FieldError::new(field, "is required"));
        return None;
    };
    parse(raw).map_err(|message| errors.push(FieldError::new(field, message))).ok()
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/auth/signup",
    tag = "auth",
    request_body(content = SignupRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The account was created; `user.created` will be published.", body = UserBody,
            headers(("location" = String, description = "`/users/{id}`"))),
        (status = 400, description = "The body is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email is taken (case-insensitively).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each listed in `errors`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "At capacity (hashing queue full, in-flight limit, timeout) or the database is unavailable; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    AppJson(request): AppJson<SignupRequest>,
) -> Result<Response, ApiError> {
    let account = NewAccount::parse(request)?;
    let digest = state.hasher.hash(account.password).await?;
    let id = Uuid::new_v4();
    // Millisecond precision: the response, the event and the row then all agree with what
    // `toISOString` can express.
    let created_at = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now);
    let event =
        UserCreated { id, email: account.email.as_str().to_owned(), name: account.name.into_string(), created_at };

    // The event id is a new UUID of its own: a user may get more events than this one.
    let announcement = NewEvent::new(Uuid::new_v4(), &event, Some(TraceContext::outgoing()))?;
    let account = NewCredentials { id, email: &account.email, digest: &digest, created_at };
    credentials::insert_announced(&state.db, account, announcement).await?;
    metrics::counter!("signups_total").increment(1);
    tracing::info!(user_id = %id, "account created");

    let body = UserBody { id, email: event.email, name: event.name, created_at };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/users/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}
