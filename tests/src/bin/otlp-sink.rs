//! `otlp-sink`: an OTLP/HTTP receiver with a small query API, the compose proof's stand-in for
//! Jaeger all-in-one (docker/standins/jaeger) on machines that cannot pull images.
//!
//! It receives traces as Jaeger's OTLP receiver does (`POST /v1/traces`, protobuf, on
//! `OTLP_SINK_OTLP_ADDR`, 0.0.0.0:4318) with the test kit's receiver (`tests::otlp`), keeps
//! them in memory (at most `OTLP_SINK_MAX_SPANS`, 100000, the oldest dropped first) and answers
//! on `OTLP_SINK_QUERY_ADDR` (0.0.0.0:16686, where Jaeger has its UI and query API):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /healthz` | `{"status":"ok","spans":…,"exports":…,"dropped":…}` |
//! | `GET /api/services` | `{"data":[service names]}` as Jaeger's query API |
//! | `GET /api/traces?service=S[&limit=N]` | `{"data":[traces]}`: the newest N (20) traces with a span of S, Jaeger's shape |
//! | `GET /api/traces/{traceID}` | `{"data":[trace]}`, or 404 |
//! | `GET /api/spans[?trace_id=T][&service=S]` | every span received, flat: ids, name, service, kind, attributes |
//!
//! The Jaeger-shaped answers are a subset of Jaeger's own (`traceID`, `spans[]` with `spanID`,
//! `operationName`, `references` to the parent as `CHILD_OF`, `startTime`, `duration`, `tags`
//! with `span.kind`, `processID`; `processes` with `serviceName`), so a script reading them
//! works against the real Jaeger too. Errors are Jaeger's `{"data":null,"errors":[{"code","msg"}]}`.
//! SIGTERM or SIGINT stops it.

use std::{collections::BTreeMap, net::SocketAddr, process::ExitCode};

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde::Deserialize;
use serde_json::{Value, json};
use tests::otlp::{self, ReceivedSpan, SpanStore};
use tokio::{net::TcpListener, sync::watch};

/// How many traces `GET /api/traces` returns without `limit` (Jaeger's UI asks for 20).
const DEFAULT_TRACE_LIMIT: usize = 20;

/// Why the sink could not start or stopped.
#[derive(Debug, thiserror::Error)]
enum SinkError {
    #[error("{name}={value:?}: {reason}")]
    Config { name: &'static str, value: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} server failed: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The sink's settings, from the environment.
struct Config {
    otlp_addr: SocketAddr,
    query_addr: SocketAddr,
    max_spans: usize,
}

impl Config {
    fn from_env() -> Result<Config, SinkError> {
        Ok(Config {
            otlp_addr: setting("OTLP_SINK_OTLP_ADDR", "0.0.0.0:4318")?,
            query_addr: setting("OTLP_SINK_QUERY_ADDR", "0.0.0.0:16686")?,
            max_spans: setting("OTLP_SINK_MAX_SPANS", &otlp::DEFAULT_CAPACITY.to_string())?,
        })
    }
}

/// A variable parsed, or its default when unset or blank.
fn setting<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, SinkError>
where
    T::Err: std::fmt::Display,
{
    let value = std::env::var(name).ok().filter(|value| !value.trim().is_empty());
    let value = value.as_deref().unwrap_or(default).trim();
    value.parse().map_err(|error: T::Err| SinkError::Config {
        name,
        value: value.to_owned(),
        reason: error.to_string(),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("otlp-sink: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), SinkError> {
    let config = Config::from_env()?;
    let store = SpanStore::new(config.max_spans);
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| SinkError::Bind { addr, source })
    };
    let (otlp_listener, query_listener) = (bind(config.otlp_addr).await?, bind(config.query_addr).await?);
    eprintln!(
        "otlp-sink: OTLP/HTTP on {}/v1/traces, query API on {} (keeps {} spans)",
        config.otlp_addr, config.query_addr, config.max_spans
    );

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let otlp_app = otlp::router(store.clone()).layer(middleware::from_fn(log_request));
    let otlp_server = axum::serve(otlp_listener, otlp_app).with_graceful_shutdown(until_stopped(stopped.clone()));
    let query_server =
        axum::serve(query_listener, query_router(store)).with_graceful_shutdown(until_stopped(stopped.clone()));
    let signal = async move {
        wait_for_signal().await;
        eprintln!("otlp-sink: stopping");
        let _ = stop.send(true);
    };
    let (otlp, query, ()) = tokio::join!(otlp_server.into_future(), query_server.into_future(), signal);
    otlp.map_err(|source| SinkError::Serve { what: "OTLP", source })?;
    query.map_err(|source| SinkError::Serve { what: "query", source })
}

/// SIGTERM (`docker stop`) or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            eprintln!("otlp-sink: no SIGTERM handler ({error}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One line per export request: what the container's log shows when a proof fails.
async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    eprintln!("otlp-sink: {method} {path} {}", response.status().as_u16());
    response
}

fn query_router(store: SpanStore) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/services", get(services))
        .route("/api/traces", get(traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/spans", get(spans))
        .with_state(store)
}

/// A failed query, answered in Jaeger's error shape.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("parameter 'service' is required")]
    NoService,
    #[error("{0:?} is not a trace id (1 to 32 hexadecimal digits)")]
    BadTraceId(String),
    #[error("trace not found")]
    NoTrace,
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match self {
            QueryError::NoService | QueryError::BadTraceId(_) => StatusCode::BAD_REQUEST,
            QueryError::NoTrace => StatusCode::NOT_FOUND,
        };
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": self.to_string()}],
        });
        (status, Json(body)).into_response()
    }
}

async fn healthz(State(store): State<SpanStore>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "spans": store.spans().len(),
        "exports": store.exports(),
        "dropped": store.dropped(),
    }))
}

async fn services(State(store): State<SpanStore>) -> Json<Value> {
    let mut names: Vec<String> = store.spans().into_iter().map(|span| span.service).collect();
    names.sort();
    names.dedup();
    Json(json!({"data": names, "total": names.len(), "limit": 0, "offset": 0, "errors": null}))
}

#[derive(Deserialize)]
struct TracesQuery {
    service: Option<String>,
    limit: Option<usize>,
}

async fn traces(State(store): State<SpanStore>, Query(query): Query<TracesQuery>) -> Result<Json<Value>, QueryError> {
    let service = query.service.filter(|service| !service.is_empty()).ok_or(QueryError::NoService)?;
    let limit = query.limit.filter(|limit| *limit > 0).unwrap_or(DEFAULT_TRACE_LIMIT);
    let spans = store.spans();
    // Newest first: by the arrival of each trace's latest span.
    let mut ids: Vec<&str> = Vec::new();
    for span in spans.iter().rev().filter(|span| span.service == service) {
        if !ids.contains(&span.trace_id.as_str()) {
            ids.push(&span.trace_id);
        }
    }
    ids.truncate(limit);
    let data: Vec<Value> = ids.iter().map(|id| jaeger_trace(id, &spans)).collect();
    Ok(Json(json!({"data": data, "total": data.len(), "limit": limit, "offset": 0, "errors": null})))
}

async fn trace(State(store): State<SpanStore>, Path(trace_id): Path<String>) -> Result<Json<Value>, QueryError> {
    let id = trace_id_of(&trace_id)?;
    let spans = store.spans();
    if !spans.iter().any(|span| span.trace_id == id) {
        return Err(QueryError::NoTrace);
    }
    Ok(Json(json!({"data": [jaeger_trace(&id, &spans)], "total": 1, "limit": 0, "offset": 0, "errors": null})))
}

#[derive(Deserialize)]
struct SpansQuery {
    trace_id: Option<String>,
    service: Option<String>,
}

async fn spans(State(store): State<SpanStore>, Query(query): Query<SpansQuery>) -> Result<Json<Value>, QueryError> {
    let trace_id = query.trace_id.as_deref().filter(|id| !id.is_empty()).map(trace_id_of).transpose()?;
    let listed: Vec<Value> = store
        .spans()
        .iter()
        .filter(|span| trace_id.as_ref().is_none_or(|id| &span.trace_id == id))
        .filter(|span| query.service.as_ref().is_none_or(|service| &span.service == service))
        .map(flat_span)
        .collect();
    Ok(Json(json!({"spans": listed, "total": listed.len(), "exports": store.exports(), "dropped": store.dropped()})))
}

/// A trace id as the receiver keeps it (32 lowercase hex digits); Jaeger prints ids without
/// their leading zeros, so shorter ids are padded.
fn trace_id_of(text: &str) -> Result<String, QueryError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 32 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(QueryError::BadTraceId(text.to_owned()));
    }
    Ok(format!("{:0>32}", text.to_ascii_lowercase()))
}

/// `server`, `client`, `producer`, `consumer`, `internal` (Jaeger's `span.kind` values), or ``.
fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
        SpanKind::Unspecified => "",
    }
}

fn flat_span(span: &ReceivedSpan) -> Value {
    json!({
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "parentSpanId": span.parent_span_id,
        "name": span.name,
        "service": span.service,
        "kind": kind_name(span.kind),
        "attributes": span.attributes,
        "links": span.links,
        "error": span.error,
        "startTimeUnixNano": span.start_unix_nano,
        "endTimeUnixNano": span.end_unix_nano,
    })
}

/// The spans of `trace_id` in Jaeger's query API shape, one process per service.
fn jaeger_trace(trace_id: &str, spans: &[ReceivedSpan]) -> Value {
    let mut processes: BTreeMap<String, String> = BTreeMap::new();
    let mut listed = Vec::new();
    for span in spans.iter().filter(|span| span.trace_id == trace_id) {
        let next = format!("p{}", processes.len() + 1);
        let process = processes.entry(span.service.clone()).or_insert(next).clone();
        let mut tags = vec![json!({"key": "span.kind", "type": "string", "value": kind_name(span.kind)})];
        tags.extend(span.attributes.iter().map(|(key, value)| json!({"key": key, "type": "string", "value": value})));
        if span.error {
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        let references: Vec<Value> = if span.parent_span_id.is_empty() {
            Vec::new()
        } else {
            vec![json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id})]
        };
        listed.push(json!({
            "traceID": trace_id,
            "spanID": span.span_id,
            "operationName": span.name,
            "references": references,
            "startTime": span.start_unix_nano / 1000,
            "duration": span.end_unix_nano.saturating_sub(span.start_unix_nano) / 1000,
            "tags": tags,
            "logs": [],
            "processID": process,
            "warnings": null,
            "flags": 1,
        }));
    }
    let processes: BTreeMap<String, Value> = processes
        .into_iter()
        .map(|(service, process)| (process, json!({"serviceName": service, "tags": []})))
        .collect();
    json!({"traceID": trace_id, "spans": listed, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod query_api {
    //! The sink over real HTTP: a protobuf export in, the query API's answers out.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    use prost::Message as _;
    use tests::otlp::OtlpReceiver;

    use super::*;

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, kind: SpanKind) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
            name: name.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000,
            end_time_unix_nano: 3_000_000,
            attributes: vec![text("messaging.system", "rabbitmq")],
            ..Span::default()
        }
    }

    fn export(service: &str, spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![text("service.name", service)], ..Resource::default() }),
                scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }

    async fn sink() -> (OtlpReceiver, String) {
        let receiver = OtlpReceiver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), SpanStore::new(100)).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let query = format!("http://{}", listener.local_addr().unwrap());
        let app = query_router(receiver.store().clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, query)
    }

    async fn get(url: &str) -> (u16, Value) {
        let response = reqwest::get(url).await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn an_export_is_answered_in_jaegers_shape_and_as_a_flat_listing() {
        let (receiver, query) = sink().await;
        let http = reqwest::Client::new();
        let post = |body: Vec<u8>| {
            http.post(format!("{}/v1/traces", receiver.endpoint()))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
        };
        let auth = export("auth-service", vec![span(0x0a, 1, None, "POST /auth/signup", SpanKind::Server)]);
        assert_eq!(post(auth).await.unwrap().status(), 200);
        let user = export("user-service", vec![span(0x0a, 2, Some(1), "process q", SpanKind::Consumer)]);
        assert_eq!(post(user).await.unwrap().status(), 200);
        let other = export("user-service", vec![span(0x0b, 3, None, "other", SpanKind::Internal)]);
        assert_eq!(post(other).await.unwrap().status(), 200);

        let (status, services) = get(&format!("{query}/api/services")).await;
        assert_eq!((status, services["data"].clone()), (200, json!(["auth-service", "user-service"])));

        let trace_id = "0a".repeat(16);
        let (status, found) = get(&format!("{query}/api/traces/{trace_id}")).await;
        assert_eq!(status, 200, "{found}");
        let trace = &found["data"][0];
        assert_eq!(trace["traceID"], trace_id);
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "{trace:#}");
        let consumer = &spans[1];
        assert_eq!(consumer["operationName"], "process q");
        assert_eq!(
            consumer["references"],
            json!([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": "01".repeat(8)}])
        );
        assert_eq!((consumer["startTime"].clone(), consumer["duration"].clone()), (json!(1000), json!(2000)));
        let process = consumer["processID"].as_str().unwrap();
        assert_eq!(trace["processes"][process]["serviceName"], "user-service");
        let tags = consumer["tags"].as_array().unwrap();
        assert!(tags.contains(&json!({"key": "span.kind", "type": "string", "value": "consumer"})), "{tags:?}");
        assert!(tags.contains(&json!({"key": "messaging.system", "type": "string", "value": "rabbitmq"})));
        assert_eq!(spans[0]["references"], json!([]));

        // Newest first, only the traces with a span of the service.
        let (_, listed) = get(&format!("{query}/api/traces?service=user-service")).await;
        let ids: Vec<&str> =
            listed["data"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap()).collect();
        assert_eq!(ids, ["0b".repeat(16), trace_id.clone()]);
        let (_, listed) = get(&format!("{query}/api/traces?service=auth-service&limit=5")).await;
        assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));

        let (_, flat) = get(&format!("{query}/api/spans?trace_id={trace_id}&service=user-service")).await;
        assert_eq!(flat["total"], 1);
        let only = &flat["spans"][0];
        assert_eq!(
            (&only["spanId"], &only["parentSpanId"], &only["kind"], &only["service"]),
            (&json!("02".repeat(8)), &json!("01".repeat(8)), &json!("consumer"), &json!("user-service"))
        );
        assert_eq!(only["attributes"]["messaging.system"], "rabbitmq");

        let (status, health) = get(&format!("{query}/healthz")).await;
        assert_eq!((status, health["spans"].clone(), health["exports"].clone()), (200, json!(3), json!(3)));
    }

    #[tokio::test]
    async fn bad_queries_get_jaegers_error_shape() {
        let (_receiver, query) = sink().await;
        let too_long = format!("/api/traces/{}", "1".repeat(33));
        for (path, code) in [
            ("/api/traces", 400),
            ("/api/traces/not-hex", 400),
            (too_long.as_str(), 400),
            ("/api/traces/abc", 404),
            ("/api/spans?trace_id=xyz", 400),
        ] {
            let (status, body) = get(&format!("{query}{path}")).await;
            assert_eq!(status, code, "{path}: {body}");
            assert_eq!(body["data"], Value::Null, "{path}");
            assert_eq!(body["errors"][0]["code"], code, "{path}: {body}");
        }
    }

    #[test]
    fn short_trace_ids_are_padded_as_jaeger_strips_leading_zeros() {
        assert_eq!(trace_id_of("ABC").unwrap(), format!("{}abc", "0".repeat(29)));
        assert!(matches!(trace_id_of(""), Err(QueryError::BadTraceId(_))));
    }
}
