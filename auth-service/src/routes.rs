//! The HTTP surface: one line per route, then the layers every request goes through.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use shared::ops;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{error::ApiError, login, openapi, rate_limit::Limiter, request_context, signup, state::AppState, users};

/// The whole application router, operations routes included (one port serves everything).
pub fn router(state: AppState, readiness: ops::Readiness, limiter: &Limiter, body_limit: usize) -> Router {
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
        .merge(ops::router(readiness))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The limit applies to every body extractor; `AppJson` answers 413 when it is hit.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_panic| panicked()))
        // Outermost, so even rejections by the layers above get a request id and a log line.
        .layer(middleware::from_fn(request_context::observe))
}

fn panicked() -> Response {
    ApiError::Internal("a handler panicked").into_response()
}
