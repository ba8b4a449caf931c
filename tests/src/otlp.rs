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

use std::{
    collections::BTreeMap,
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
}

impl ReceivedSpan {
    /// One attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    exports: usize,
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port for the OTLP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new().route("/v1/traces", post(export)).with_state(Arc::clone(&received));
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("otlp receiver stopped: {error}");
            }
        });
        OtlpReceiver { addr, received, task }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporters append `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).spans.clone()
    }

    /// How many export requests were decoded.
    pub fn exports(&self) -> usize {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).exports
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(State(received): State<Arc<Mutex<Received>>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if content_type != "application/x-protobuf" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("protobuf only, not {content_type:?}")).into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("undecodable: {error}")).into_response(),
    };
    let spans = flatten(request);
    {
        let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
        received.spans.extend(spans);
        received.exports += 1;
    }
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
