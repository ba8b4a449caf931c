//! The HTTP surfaces: one line per route, then the layers every request goes through.
//!
//! The public port ([`router`]) serves the API, `/healthz` and `/openapi.json`; the
//! operations port (`shared::ops::router`, mounted by [`crate::app`]) serves `/healthz`,
//! `/readyz` and `/metrics`, so neither readiness details nor metrics are exposed to API clients.

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    error::ApiError, login, openapi, overload::Limits, overload::enforce, rate_limit::Limiter, request_context, signup,
    state::AppState, users,
};

/// The public router: the API, `/healthz` and `/openapi.json`.
pub fn router(state: AppState, limiter: &Limiter, limits: Limits, body_limit: usize) -> Router {
    let auth = Router::new()
        .route("/auth/signup", post(signup::signup))
        .route("/auth/login", post(login::login))
        .layer(limiter.layer());
    Router::new()
        .route("/users/me", get(users::me))
        .route("/users/{id}", get(users::get_user))
        .merge(auth)
        .with_state(state)
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The limit applies to every body extractor; `AppJson` answers 413 when it is hit.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_panic| panicked()))
        // In-flight limit and request timeout (503 problem+json), around everything above.
        .layer(middleware::from_fn_with_state(limits, enforce))
        // Outermost, so even rejections by the layers above get a request id and a log line.
        .layer(middleware::from_fn(request_context::observe))
}

/// Liveness on the public port: 200 while the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

fn panicked() -> Response {
    ApiError::Internal("a handler panicked").into_response()
}
