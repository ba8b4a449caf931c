//! The HTTP boundary's one error type and its one mapping to `application/problem+json`
//! (RFC 9457): `{type, title, status, detail, errors?: [{field, message}]}`.
//!
//! Every variant documents what the client sees. Server-side failures (5xx) are logged here,
//! once, with their whole source chain, inside the request's span; client errors are not
//! logged with their details, which may echo what the client sent (passwords included).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use shared::{RpcError, error::RemoteError};
use utoipa::ToSchema;

use crate::{credentials::CredentialsError, outbox::OutboxError, password::HashError, token::TokenError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:problem:auth-service:validation",
    "title": "Invalid input",
    "status": 422,
    "detail": "The request has invalid fields.",
    "errors": [{"field": "email", "message": "must be an email address like name@example.com"}]
}))]
pub struct Problem {
    /// A URN naming the kind of problem; stable, for clients to switch on.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Per-field problems (validation errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request body.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Everything an HTTP request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: well-formed JSON of the wrong shape or with invalid values; lists every field.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 400: the body is not JSON (syntax error, truncated, trailing data).
    #[error("malformed JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// 400: the body could not be read (the connection broke while sending it).
    #[error("the request body could not be read")]
    UnreadableBody(#[source] axum::extract::rejection::BytesRejection),
    /// 400: a path parameter is not valid (e.g. not UTF-8).
    #[error("invalid path parameter")]
    BadPath(String),
    /// 415: the body is not declared as JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 413: the body exceeds `BODY_LIMIT_BYTES`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 409: an account with this email (compared case-insensitively) exists.
    #[error("email already registered")]
    EmailTaken,
    /// 401: unknown email or wrong password, one message for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 401 with `WWW-Authenticate: Bearer …`: no, an expired or an invalid access token.
    #[error("not authenticated")]
    Unauthorized(#[source] TokenError),
    /// 404: no route here.
    #[error("no such route")]
    RouteNotFound,
    /// 405: the route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 429 with `Retry-After`: the client's rate limit on `/auth/*` is spent.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// 429 with `Retry-After`: too many failed logins for this email or from this client in
    /// the window. The same answer whether or not an account has the email.
    #[error("login throttled")]
    LoginThrottled { retry_after_secs: u64 },
    /// 503 with `Retry-After: 1`: shed at once, the service is at capacity (the password
    /// hashing queue is full, or the public port's in-flight limit is reached).
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    /// 503 with `Retry-After: 1`: the request took longer than `REQUEST_TIMEOUT_MS`.
    #[error("the request timed out")]
    TimedOut,
    /// A request to another service failed; mapped by outcome alone, whatever the contract:
    /// a remote 404 or 400 is passed on with the remote message, timeout → 504, broker
    /// unavailable → 503, no handler / undecodable reply / other remote errors → 502.
    #[error("a request to another service failed")]
    Rpc(#[source] RpcError),
    /// 503 when the database is unreachable, 500 otherwise.
    #[error("database failure")]
    Database(#[source] sqlx::Error),
    /// 500.
    #[error("password hashing failed")]
    Hashing(#[source] HashError),
    /// 500: the access token could not be signed.
    #[error("token signing failed")]
    Signing(#[source] TokenError),
    /// 500: an event could not be encoded for the outbox.
    #[error("event encoding failed")]
    Encode(#[source] serde_json::Error),
    /// 500: a bug (a panicking handler, broken wiring); the reason is logged.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<CredentialsError> for ApiError {
    fn from(error: CredentialsError) -> Self {
        match error {
            CredentialsError::EmailTaken => Self::EmailTaken,
            CredentialsError::Database(source) => Self::Database(source),
        }
    }
}

impl From<OutboxError> for ApiError {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Database(source) => Self::Database(source),
            OutboxError::Encode(source) => Self::Encode(source),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Saturated => Self::Overloaded("the password hashing queue is full"),
            error => Self::Hashing(error),
        }
    }
}

impl From<RpcError> for ApiError {
    fn from(error: RpcError) -> Self {
        Self::Rpc(error)
    }
}

/// A rejected bearer token (the `BearerUser` extractor's rejection) is a 401 like any other.
impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        ApiError::Unauthorized(self).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// What a variant looks like from outside: status, problem slug, title, detail.
struct Shape {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
}

impl Shape {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, title, detail: detail.into() }
    }
}

impl ApiError {
    fn shape(&self) -> Shape {
        use StatusCode as S;
        match self {
            Self::Validation(_) => {
                Shape::new(S::UNPROCESSABLE_ENTITY, "validation", "Invalid input", "The request has invalid fields.")
            }
            Self::MalformedJson(source) => Shape::new(
                S::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("The body is not valid JSON: {source}."),
            ),
            Self::UnreadableBody(_) => {
                Shape::new(S::BAD_REQUEST, "unreadable-body", "Unreadable body", "The request body could not be read.")
            }
            Self::BadPath(detail) => Shape::new(S::BAD_REQUEST, "bad-path", "Invalid path", detail.clone()),
            Self::UnsupportedMediaType => Shape::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as JSON with `Content-Type: application/json`.",
            ),
            Self::PayloadTooLarge => Shape::new(
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "The request body exceeds the size limit.",
            ),
            Self::EmailTaken => Shape::new(
                S::CONFLICT,
                "email-taken",
                "Email already registered",
                "An account with this email already exists.",
            ),
            Self::InvalidCredentials => Shape::new(
                S::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
                "The email or password is incorrect.",
            ),
            Self::Unauthorized(reason) => {
                let detail = match reason {
                    TokenError::Missing => "A bearer access token is required.",
                    TokenError::Expired => "The access token has expired.",
                    TokenError::Invalid(_) | TokenError::Signing(_) => "The access token is invalid.",
                };
                Shape::new(S::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
            }
            Self::RouteNotFound => Shape::new(S::NOT_FOUND, "not-found", "Not found", "There is no such resource."),
            Self::MethodNotAllowed => Shape::new(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "This resource does not support the request method.",
            ),
            Self::RateLimited { retry_after_secs } => Shape::new(
                S::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("Too many requests from this client; retry in {retry_after_secs} s."),
            ),
            Self::LoginThrottled { retry_after_secs } => Shape::new(
                S::TOO_MANY_REQUESTS,
                "login-throttled",
                "Too many failed logins",
                format!("Too many failed logins for this email or from this client; retry in {retry_after_secs} s."),
            ),
            Self::Overloaded(_) => Shape::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service unavailable",
                "The service is at capacity; retry shortly.",
            ),
            Self::TimedOut => Shape::new(
                S::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
                "The request took too long to handle; retry shortly.",
            ),
            Self::Rpc(error) => rpc_shape(error),
            Self::Database(error) if is_unavailable(error) => Shape::new(
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Service unavailable",
                "The database is unavailable; try again later.",
            ),
            Self::Database(_) | Self::Hashing(_) | Self::Signing(_) | Self::Encode(_) | Self::Internal(_) => {
                Shape::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal server error",
                    "Something went wrong on our side.",
                )
            }
        }
    }
}

/// The one place RPC outcomes become HTTP statuses, for any request to any service. A remote
/// 404 or 400 describes the caller's request, not a failure of the remote service, so it is
/// passed on with the remote message; every other remote error is the remote's fault (502).
fn rpc_shape(error: &RpcError) -> Shape {
    use StatusCode as S;
    match error {
        RpcError::Remote { error, .. } => match error.status() {
            Some(404) => passed_on(S::NOT_FOUND, "not-found", "Not found", error),
            Some(400) => passed_on(S::BAD_REQUEST, "bad-request", "Bad request", error),
            _ => upstream_error(),
        },
        RpcError::Timeout { .. } => Shape::new(
            S::GATEWAY_TIMEOUT,
            "upstream-timeout",
            "Upstream timeout",
            "A service this request needs did not answer in time.",
        ),
        RpcError::Unavailable { .. } => Shape::new(
            S::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            "Service unavailable",
            "The message broker is unavailable; try again later.",
        ),
        RpcError::NoHandler { .. } | RpcError::Decode { .. } => upstream_error(),
        RpcError::Encode(_) => Shape::new(
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "Something went wrong on our side.",
        ),
    }
}

fn passed_on(status: StatusCode, slug: &'static str, title: &'static str, error: &RemoteError) -> Shape {
    Shape::new(status, slug, title, error.message().unwrap_or(title))
}

fn upstream_error() -> Shape {
    Shape::new(
        StatusCode::BAD_GATEWAY,
        "upstream-error",
        "Bad gateway",
        "A service this request needs failed to answer properly.",
    )
}

/// Whether a database error means "cannot reach it" (retryable) rather than a failed query.
fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let shape = self.shape();
        match &self {
            // Load shedding is the service working as designed: a warning, not an error.
            Self::Overloaded(_) | Self::TimedOut => {
                tracing::warn!(status = shape.status.as_u16(), reason = %self, "request shed");
            }
            // The chain may quote what a peer or the database said: escaped, so that no text
            // in it can start a forged log line.
            _ if shape.status.is_server_error() => {
                let chain = shared::error::chain(&self);
                tracing::error!(status = shape.status.as_u16(), error = %chain.escape_debug(), "request failed");
            }
            _ => {}
        }
        let challenge = match &self {
            Self::Unauthorized(TokenError::Missing) | Self::InvalidCredentials => {
                Some(HeaderValue::from_static("Bearer"))
            }
            Self::Unauthorized(_) => Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#)),
            _ => None,
        };
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } | Self::LoginThrottled { retry_after_secs } => {
                Some(HeaderValue::from(*retry_after_secs))
            }
            // Every 503 is temporary: overload, a timeout, a database or broker outage.
            _ if shape.status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from(1u64)),
            _ => None,
        };
        let errors = match self {
            Self::Validation(errors) => Some(errors),
            _ => None,
        };
        let body = Problem {
            kind: format!("urn:problem:auth-service:{}", shape.slug),
            title: shape.title.to_owned(),
            status: shape.status.as_u16(),
            detail: shape.detail,
            errors,
        };
        let mut response = (shape.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}
