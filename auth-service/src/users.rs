//! `GET /users/{id}` and `GET /users/me`: a user's profile from the user-service, over
//! `send({cmd:"get_user"})`. Bearer token required.
//!
//! The request runs inside the HTTP request's trace scope, so the RPC carries its
//! `traceparent`. How RPC outcomes become statuses is decided in one place,
//! [`crate::error`]: 200, remote 404 → 404, remote 400 → 400, timeout → 504, broker
//! unavailable → 503, anything else the user-service gets wrong → 502.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use shared::contracts::GetUser;
use uuid::Uuid;

use crate::{
    error::{ApiError, Problem},
    signup::UserBody,
    state::AppState,
    token::BearerUser,
};

/// Any user's profile, by id.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user id: a UUID in its hyphenated form")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = UserBody),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, expired or invalid token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user.", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The user-service answered wrongly.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker is unavailable, or the service is at capacity; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
        (status = 504, description = "The user-service did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    _caller: BearerUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UserBody>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::BadPath(rejection.body_text()))?;
    // The hyphenated form only (36 characters), as the OpenAPI document says: `Uuid` alone
    // would also take the simple, braced and URN forms.
    let id = Uuid::parse_str(&id).ok().filter(|_| id.len() == 36).ok_or_else(|| {
        ApiError::BadPath("The user id must be a UUID like 3f2b8c1e-6d4a-4e8f-9b1c-2a7d5e9f0c13.".to_owned())
    })?;
    fetch(&state, id.to_string()).await
}

/// The caller's own profile.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller.", body = UserBody),
        (status = 401, description = "Missing, expired or invalid token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user-service does not know the caller (yet).", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The user-service answered wrongly.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker is unavailable, or the service is at capacity; see `Retry-After`.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
        (status = 504, description = "The user-service did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(State(state): State<AppState>, BearerUser(caller): BearerUser) -> Result<Json<UserBody>, ApiError> {
    fetch(&state, caller.to_string()).await
}

async fn fetch(state: &AppState, id: String) -> Result<Json<UserBody>, ApiError> {
    let user = state.rpc.send(&GetUser { id }).await?;
    Ok(Json(user.into()))
}
