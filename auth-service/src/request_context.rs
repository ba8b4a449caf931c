//! Per-request context: request id, W3C trace, a span, one log line and metrics.
//!
//! Guarantees for every request, errors and rejections included:
//! - an `x-request-id` on the response: the client's (if it is a sane token: 1–128 visible
//!   ASCII characters) or a new UUID;
//! - a span `http` carrying `request_id`, `trace_id`, method and route, around everything the
//!   request does, so every log line of it carries them; with traces exported, the server span
//!   `{method} {route}`, the child of the caller's `traceparent`;
//! - the trace continued from the `traceparent` header (or a new root) as the task's current
//!   [`TraceContext`], so RPCs and outbox rows carry it on;
//! - one `request finished` line with status and latency, and the `http_requests_total` and
//!   `http_request_duration_seconds` metrics. Every label is bounded whatever clients send:
//!   `method` is one of the methods the API serves (`GET`, `HEAD`, `POST`) or `other`,
//!   `route` the matched route template (not the raw path) or `unmatched`.
//!
//! Nothing from headers other than these two ids is logged: no `Authorization`, no bodies.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use shared::TraceContext;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Longer client-supplied ids are replaced: they end up in every log line.
const REQUEST_ID_MAX: usize = 128;

/// The middleware; see the module docs.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let request_id = client_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let parent =
        request.headers().get(&TRACEPARENT).and_then(|value| value.to_str().ok()).and_then(TraceContext::parse);
    let trace = parent.map_or_else(TraceContext::new_root, |parent| parent.child());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = method_label(request.method());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }

    let span = tracing::info_span!(
        "http",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        %request_id,
        trace_id = %trace.trace_id(),
        %method,
        %route,
    );
    // Exported, the span is the child of the caller's and the request continues it.
    let known_route = (route != "unmatched").then_some(route.as_str());
    let trace = shared::trace::http_server(&span, &method, known_route, parent, trace);
    let started = Instant::now();
    let mut response = trace.scope(next.run(request)).instrument(span.clone()).await;
    let elapsed = started.elapsed();

    let status = response.status().as_u16();
    shared::trace::set_attribute(&span, "http.response.status_code", i64::from(status));
    if status >= 500 {
        shared::trace::set_error(&span, status);
    }
    span.in_scope(|| tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished"));
    let labels = [("method", method.to_owned()), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The `method` label and log field: a method the API serves, else `other`, so that made-up
/// methods cannot grow the metric series (or the logs) without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        _ => "other",
    }
}

fn client_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let sane = !value.is_empty() && value.len() <= REQUEST_ID_MAX && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_owned())
}
