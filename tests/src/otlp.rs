//! A real OTLP receiver, in-process: an HTTP server accepting `POST /v1/traces` with the
//! protobuf body the OpenTelemetry exporters send (OTLP/HTTP), decoded with the
//! `opentelemetry-proto` types, keeping every span it received for the test to look at.
//!
//! ```text
//! let receiver = tests::otlp::OtlpReceiver::start().await;
//! // run services with OTEL_EXPORTER_OTLP_ENDPOINT = receiver.endpoint()
//! let spans = tests::eventually_some(tests::DEADLINE, || async { … receiver.spans() … }).await;
//! ```
//!
//! It answers like a collector: 200 with an `ExportTraceServiceResponse` for a body it
//! decodes, 400 for one it cannot, 415 for anything but protobuf, 404 for other paths.
//!
//! The pieces are public for the `otlp-sink` binary (the compose proof's stand-in for Jaeger):
//! a [`SpanStore`] bounded to a number of spans (the oldest are dropped first) and the
//! [`router`] that fills it, which the binary serves on an address of its own.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::post,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use tokio::task::JoinHandle;

/// One span as received: ids in lowercase hex (the parent empty for a root).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Every attribute, its value rendered as text (strings unquoted).
    pub attributes: BTreeMap<String, String>,
    /// The span ids this span links to (`follows_from`).
    pub links: Vec<String>,
    /// Whether its status is `Error`.
    pub error: bool,
    /// Start and end, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// One attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// How many spans a receiver keeps by default: far more than a test or a proof produces, and a
/// bound on the memory of a sink left running (a span takes well under a kilobyte here).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The spans received so far, shared by the receiving router and whoever reads them. Keeps at
/// most its capacity, dropping the oldest spans first.
#[derive(Clone)]
pub struct SpanStore {
    received: Arc<Mutex<Received>>,
    capacity: usize,
}

#[derive(Default)]
struct Received {
    spans: VecDeque<ReceivedSpan>,
    exports: usize,
    dropped: u64,
}

impl SpanStore {
    /// An empty store keeping at most `capacity` spans (at least one).
    pub fn new(capacity: usize) -> SpanStore {
        SpanStore { received: Arc::default(), capacity: capacity.max(1) }
    }

    /// Every span kept, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.iter().cloned().collect()
    }

    /// How many export requests were decoded.
    pub fn exports(&self) -> usize {
        self.lock().exports
    }

    /// How many spans were dropped to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn record(&self, spans: Vec<ReceivedSpan>) {
        let mut received = self.lock();
        received.spans.extend(spans);
        let excess = received.spans.len().saturating_sub(self.capacity);
        received.spans.drain(..excess);
        received.dropped += excess as u64;
        received.exports += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        // A panic while holding the lock cannot leave the spans half-written: keep going.
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `POST /v1/traces` (OTLP/HTTP, protobuf), storing what it decodes into `store`.
pub fn router(store: SpanStore) -> Router {
    Router::new().route("/v1/traces", post(export)).with_state(store)
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: SpanStore,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> OtlpReceiver {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        OtlpReceiver::bind(any_port, SpanStore::new(DEFAULT_CAPACITY)).await.expect("a free port for the OTLP receiver")
    }

    /// Listens on `addr` (port 0: a free one), storing into `store`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, store: SpanStore) -> std::io::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(store.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("otlp receiver stopped: {error}");
            }
        });
        Ok(OtlpReceiver { addr, store, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporters append `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the spans go.
    pub fn store(&self) -> &SpanStore {
        &self.store
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans()
    }

    /// How many export requests were decoded.
    pub fn exports(&self) -> usize {
        self.store.exports()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(State(store): State<SpanStore>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if content_type != "application/x-protobuf" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("protobuf only, not {content_type:?}")).into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("undecodable: {error}")).into_response(),
    };
    store.record(flatten(request));
    let reply = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
    (StatusCode::OK, [(CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|resource| attributes(&resource.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    attributes: attributes(&span.attributes),
                    links: span.links.iter().map(|link| hex(&link.span_id)).collect(),
                    // opentelemetry.proto.trace.v1.Status.StatusCode: 2 = ERROR.
                    error: span.status.is_some_and(|status| status.code == 2),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    name: span.name,
                });
            }
        }
    }
    spans
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs.iter().map(|pair| (pair.key.clone(), pair.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(value)) => value.to_string(),
        Some(any_value::Value::IntValue(value)) => value.to_string(),
        Some(any_value::Value::DoubleValue(value)) => value.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod store {
    use super::*;

    fn span(id: &str) -> ReceivedSpan {
        ReceivedSpan {
            service: "s".to_owned(),
            trace_id: "t".to_owned(),
            span_id: id.to_owned(),
            parent_span_id: String::new(),
            name: id.to_owned(),
            kind: SpanKind::Internal,
            attributes: BTreeMap::new(),
            links: Vec::new(),
            error: false,
            start_unix_nano: 0,
            end_unix_nano: 0,
        }
    }

    #[test]
    fn the_store_keeps_the_newest_spans_within_its_capacity() {
        let store = SpanStore::new(2);
        store.record(vec![span("a"), span("b")]);
        store.record(vec![span("c")]);
        let kept: Vec<String> = store.spans().into_iter().map(|span| span.span_id).collect();
        assert_eq!(kept, ["b", "c"]);
        assert_eq!((store.exports(), store.dropped()), (2, 1));
    }
}
