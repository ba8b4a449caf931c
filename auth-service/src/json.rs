//! `AppJson<T>`: axum's `Json` with every rejection answered as problem+json.
//!
//! - no JSON content type → 415 (`application/json` or any `application/*+json`, with or
//!   without parameters);
//! - a body larger than the limit → 413;
//! - not JSON at all (syntax error, truncated, trailing data) → 400;
//! - JSON of the wrong shape (unknown field, wrong type, missing field) → 422 naming the field.
//!
//! Request types use `Option` fields for required values so that one response lists every
//! missing or invalid field, not just the first one serde meets.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::{ApiError, FieldError};

/// A JSON request body, decoded into `T`. See the module docs for the rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::UnreadableBody(rejection)
            }
        })?;
        decode(&bytes).map(AppJson)
    }
}

/// Decodes a body, classifying failures as syntax (400) or shape (422).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Data => ApiError::Validation(vec![shape_error(&path, &inner)]),
            Category::Syntax | Category::Eof | Category::Io => ApiError::MalformedJson(inner),
        }
    })?;
    deserializer.end().map_err(ApiError::MalformedJson)?;
    Ok(value)
}

/// Names the field a shape error is about. serde reports unknown and missing fields at the
/// enclosing object, naming the field only in its message: take it from there.
fn shape_error(path: &str, error: &serde_json::Error) -> FieldError {
    let text = error.to_string();
    // serde_json appends " at line L column C"; the position is noise in a field error.
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let quoted = message.split('`').nth(1).map(str::to_owned);
    if message.starts_with("unknown field") {
        return FieldError::new(quoted.unwrap_or_default(), "is not a known field");
    }
    if message.starts_with("missing field") {
        return FieldError::new(quoted.unwrap_or_default(), "is required");
    }
    let field = if path == "." { String::new() } else { path.to_owned() };
    FieldError::new(field, message)
}

/// Whether the content type is `application/json` or `application/<something>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: Option<String>,
        age: Option<u8>,
    }

    fn fields(body: &str) -> Vec<FieldError> {
        match decode::<Body>(body.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in ["", "{", "{\"email\":}", "nope", "{} {}", "{}x"] {
            assert!(matches!(decode::<Body>(body.as_bytes()), Err(ApiError::MalformedJson(_))), "{body}");
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert_eq!(fields(r#"{"email":"a","extra":1}"#)[0].field, "extra");
        assert_eq!(fields(r#"{"age":"old"}"#)[0].field, "age");
        assert_eq!(fields(r#"{"email":5}"#)[0].field, "email");
        assert_eq!(fields("[]")[0].field, "");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }
}
