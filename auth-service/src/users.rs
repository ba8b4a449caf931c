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
    params(("id" = String, Path, description = "The user id (a UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = UserBody),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, expired or invalid token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user.", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The user-service answered wrongly.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker is unavailable.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The user-service did not answer in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    _caller: BearerUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UserBody>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::BadPath(rejection.body_text()))?;
    fetch(&state, id).await
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
        (status = 503, description = "The broker is unavailable.", body = Problem, content_type = "application/problem+json"),
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
