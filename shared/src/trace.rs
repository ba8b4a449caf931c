//! W3C trace context (`traceparent`) carried in AMQP headers, and the exported spans it
//! stands for.
//!
//! The transport keeps the current [`TraceContext`] in a task-local: `send` and `emit` inject
//! a child of it (or a new root) as the `traceparent` header, and the server continues the
//! context it receives for the duration of each handler, so one trace id follows a flow from
//! the HTTP request through the outbox, the broker and every consumer.
//!
//! When spans are exported ([`exporting`]: `OTEL_EXPORTER_OTLP_ENDPOINT` set, see
//! [`crate::telemetry`]), the two agree: a span that continues a received context
//! ([`adopt`]) has that context as its parent, the context its work
//! carries on is the span's own, and what goes out on a message is the context of the
//! `send` span publishing it, so every `traceparent` names an exported span. Span names,
//! kinds and attributes follow the OpenTelemetry messaging conventions ([`Messaging`]).
//! When they are not exported nothing here touches OpenTelemetry: each function checks one
//! flag first and no span is added.

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::{
    KeyValue,
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The AMQP header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Whether [`crate::telemetry::init`] installed the OpenTelemetry layer.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported over OTLP. Everything else in this module is a no-op when not.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Set once the OpenTelemetry layer is part of the global subscriber (and only then: the
/// span extensions below need it).
pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// One position in a distributed trace: the trace id and this hop's span id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        Self { trace_id: nonzero(rand::random()), span_id: nonzero(rand::random()), sampled: true }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self { span_id: nonzero(rand::random()), ..*self }
    }

    /// The context to put on an outgoing message (or an outbox row): the current span's when
    /// spans are exported, else a child of the current context, else a new root.
    pub fn outgoing() -> Self {
        if exporting()
            && let Some(span) = Self::of_span(&Span::current())
        {
            return span;
        }
        Self::current().map_or_else(Self::new_root, |current| current.child())
    }

    /// The exported context of `span`: its trace id and its own span id. `None` when spans are
    /// not exported or `span` is not one of them (disabled by the filter). Starts the span in
    /// OpenTelemetry's eyes: give it its parent and kind before.
    pub fn of_span(span: &Span) -> Option<Self> {
        if !exporting() || span.is_none() {
            return None;
        }
        let context = span.context();
        let own = context.span();
        let own = own.span_context();
        own.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            sampled: own.is_sampled(),
        })
    }

    /// Makes `span` the child of `parent` (a context received from elsewhere: a header, an
    /// outbox row) and returns the span's exported context; without a parent the span keeps
    /// its place under the current span (or is a root). `None` when not exporting.
    pub fn start_span(span: &Span, parent: Option<Self>) -> Option<Self> {
        if !exporting() || span.is_none() {
            return None;
        }
        if let Some(parent) = parent {
            // Fails only for a span already started, which the callers create just before.
            let _started = span.set_parent(parent.remote());
        }
        Self::of_span(span)
    }

    /// This context as the remote parent of a span.
    fn remote(&self) -> opentelemetry::Context {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let span =
            SpanContext::new(TraceId::from(self.trace_id), SpanId::from(self.span_id), flags, true, TraceState::NONE);
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    /// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` if malformed.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// Renders the `traceparent` value.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }

    /// The trace id as 32 hex digits (the correlation id in logs).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The context of the running task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|current| *current).ok()
    }

    /// Runs `future` with this as the current context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Reads the context from AMQP headers.
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<Self> {
        match headers?.inner().get(TRACEPARENT)? {
            AMQPValue::LongString(text) => Self::parse(&String::from_utf8_lossy(text.as_bytes())),
            AMQPValue::ShortString(text) => Self::parse(text.as_str()),
            _ => None,
        }
    }

    /// Writes the context into AMQP headers.
    pub fn inject(&self, headers: &mut FieldTable) {
        headers.insert(TRACEPARENT.into(), AMQPValue::LongString(self.traceparent().into()));
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// Names an existing span (`otel.name`) and gives it its kind (`otel.kind`) in the exported
/// trace. The span must declare both fields (as `tracing::field::Empty`) and not be started
/// yet ([`TraceContext::of_span`] starts it). A no-op when not exporting.
pub fn describe(span: &Span, name: impl fmt::Display, kind: SpanKind) {
    if exporting() && !span.is_none() {
        span.record("otel.name", name.to_string());
        span.record("otel.kind", kind.as_str());
    }
}

/// Sets one attribute of an exported span (one not worth a log field). A no-op when not
/// exporting.
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exporting() && !span.is_none() {
        span.set_attribute(key, value);
    }
}

/// Marks an exported span as failed, with a description. A no-op when not exporting.
pub fn set_error(span: &Span, description: impl fmt::Display) {
    if exporting() && !span.is_none() {
        span.set_status(opentelemetry::trace::Status::error(description.to_string()));
    }
}

/// The context the work inside `span` carries on, `span` continuing `parent` (received with
/// a request or message) and its `trace_id` log field already saying `current`'s trace id:
/// `current` when not exporting, else the span's own context (the field recorded again when
/// the exported trace differs, i.e. nothing was received).
pub fn adopt(span: &Span, parent: Option<TraceContext>, current: TraceContext) -> TraceContext {
    match TraceContext::start_span(span, parent) {
        Some(own) => {
            if own.trace_id != current.trace_id {
                span.record("trace_id", own.trace_id());
            }
            own
        }
        None => current,
    }
}

/// For an HTTP server's request span (declaring `otel.name`, `otel.kind` and `trace_id`):
/// names it `"{method} {route}"`, kind server, with `http.request.method` and `http.route`,
/// then [`adopt`]s it.
pub fn http_server(
    span: &Span,
    method: &dyn fmt::Display,
    route: Option<&str>,
    parent: Option<TraceContext>,
    current: TraceContext,
) -> TraceContext {
    if !exporting() || span.is_none() {
        return current;
    }
    match route {
        Some(route) => {
            describe(span, format_args!("{method} {route}"), SpanKind::Server);
            span.set_attribute("http.route", route.to_owned());
        }
        None => describe(span, method, SpanKind::Server),
    }
    span.set_attribute("http.request.method", method.to_string());
    adopt(span, parent, current)
}

/// For the consume loop: describes the span handling `delivery` from `queue` (`process
/// {queue}`, kind server for a request, consumer for an event; the span declares `otel.name`,
/// `otel.kind` and `trace_id`), makes it the child of the span that sent the message and
/// returns the context its handler continues ([`adopt`]); `current` when not exporting.
pub(crate) fn process_span(
    span: &Span,
    delivery: &lapin::message::Delivery,
    queue: &str,
    request: bool,
    current: TraceContext,
) -> TraceContext {
    if !exporting() || span.is_none() {
        return current;
    }
    let properties = &delivery.properties;
    let messaging = Messaging {
        operation: Operation::Process,
        destination: queue,
        routing_key: Some(delivery.routing_key.as_str()),
        message_id: properties.message_id().as_ref().map(|id| id.as_str()),
        conversation_id: properties.correlation_id().as_ref().map(|id| id.as_str()),
        body_size: Some(delivery.data.len()),
    };
    messaging.describe(span, if request { SpanKind::Server } else { SpanKind::Consumer });
    adopt(span, TraceContext::from_headers(properties.headers().as_ref()), current)
}

/// A span for a call to another server that is neither a message nor SQL (an SMTP
/// transaction, say): `name`, kind client, a child of the current span. `Span::none()` when
/// not exporting.
pub fn client_span(name: &'static str) -> Span {
    if !exporting() {
        return Span::none();
    }
    tracing::info_span!("client", otel.name = name, otel.kind = SpanKind::Client.as_str())
}

/// A span for one SQL statement (`"{operation} {table}"`, kind client, with the `db.*`
/// attributes), a child of the current span. `Span::none()` when not exporting.
pub fn query_span(operation: &'static str, table: &'static str) -> Span {
    if !exporting() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "query",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = SpanKind::Client.as_str(),
    );
    set_query_attributes(&span, operation, table);
    span
}

/// [`query_span`] for one statement run for several `callers` (lookups coalesced into one
/// query): the first caller's span is its parent, the others link to it.
pub fn batch_query_span<'a>(
    callers: impl IntoIterator<Item = &'a Span>,
    operation: &'static str,
    table: &'static str,
    batch_size: usize,
) -> Span {
    if !exporting() {
        return Span::none();
    }
    let mut callers = callers.into_iter();
    let parent = callers.next().and_then(Span::id);
    let span = tracing::info_span!(
        parent: parent,
        "query",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = SpanKind::Client.as_str(),
    );
    for caller in callers {
        span.follows_from(caller);
    }
    set_query_attributes(&span, operation, table);
    if batch_size > 1 {
        span.set_attribute("db.operation.batch.size", i64::try_from(batch_size).unwrap_or(i64::MAX));
    }
    span
}

fn set_query_attributes(span: &Span, operation: &'static str, table: &'static str) {
    span.set_attribute("db.system.name", "postgresql");
    span.set_attribute("db.operation.name", operation);
    span.set_attribute("db.collection.name", table);
}

/// The OpenTelemetry span kind of a span, as its `otel.kind` field spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Answers a request (HTTP, an RPC over RabbitMQ).
    Server,
    /// Sends a request and waits for its answer (an RPC, an SQL query).
    Client,
    /// Publishes a message nobody answers (an event).
    Producer,
    /// Handles a message nobody waits for (an event).
    Consumer,
}

impl SpanKind {
    /// The `otel.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// `messaging.operation.type` (semantic conventions 1.27+, where `send` replaced `publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A message published to an exchange or queue.
    Send,
    /// A message taken from a queue (a reply arriving).
    Receive,
    /// A delivered message handled.
    Process,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Process => "process",
        }
    }
}

/// What a messaging span stands for, in the OpenTelemetry messaging conventions: the span is
/// named `"{operation} {destination}"` and carries `messaging.system = rabbitmq` with the
/// other `messaging.*` attributes.
#[derive(Debug, Clone, Copy)]
pub struct Messaging<'a> {
    pub operation: Operation,
    /// The exchange published to (the queue for the default exchange), or the queue consumed.
    pub destination: &'a str,
    pub routing_key: Option<&'a str>,
    /// The AMQP `message_id`.
    pub message_id: Option<&'a str>,
    /// The AMQP `correlation_id` (a request and its reply).
    pub conversation_id: Option<&'a str>,
    pub body_size: Option<usize>,
}

impl<'a> Messaging<'a> {
    /// Publishing to `exchange` with `routing_key`; the destination is the exchange, or the
    /// queue (the routing key) for the default exchange.
    pub fn send(exchange: &'a str, routing_key: &'a str) -> Self {
        Self {
            operation: Operation::Send,
            destination: if exchange.is_empty() { routing_key } else { exchange },
            routing_key: Some(routing_key),
            message_id: None,
            conversation_id: None,
            body_size: None,
        }
    }

    /// A new span for publishing this message (`send {destination}` of `kind`), a child of the
    /// current span; `Span::none()` when not exporting.
    pub fn send_span(&self, kind: SpanKind) -> Span {
        if !exporting() {
            return Span::none();
        }
        let span = tracing::info_span!(
            "send",
            otel.name = %format_args!("{} {}", self.operation.as_str(), self.destination),
            otel.kind = kind.as_str(),
        );
        self.set_attributes(&span);
        span
    }

    /// Names an existing span after this operation, gives it `kind` and the attributes. The
    /// span must declare `otel.name` and `otel.kind` (as `tracing::field::Empty`) and not be
    /// started yet ([`TraceContext::of_span`] starts it). A no-op when not exporting.
    pub fn describe(&self, span: &Span, kind: SpanKind) {
        if !exporting() || span.is_none() {
            return;
        }
        describe(span, format_args!("{} {}", self.operation.as_str(), self.destination), kind);
        self.set_attributes(span);
    }

    fn set_attributes(&self, span: &Span) {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", self.operation.as_str()),
            KeyValue::new("messaging.operation.name", self.operation.as_str()),
            KeyValue::new("messaging.destination.name", self.destination.to_owned()),
        ];
        if let Some(key) = self.routing_key {
            attributes.push(KeyValue::new("messaging.rabbitmq.destination.routing_key", key.to_owned()));
        }
        if let Some(id) = self.message_id {
            attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
        }
        if let Some(id) = self.conversation_id {
            attributes.push(KeyValue::new("messaging.message.conversation_id", id.to_owned()));
        }
        if let Some(size) = self.body_size {
            attributes.push(KeyValue::new("messaging.message.body.size", i64::try_from(size).unwrap_or(i64::MAX)));
        }
        for attribute in attributes {
            span.set_attribute(attribute.key, attribute.value);
        }
    }
}

fn nonzero<T: PartialEq + From<u8>>(id: T) -> T {
    // An all-zero id is invalid in W3C trace context; one in 2^64 draws is worth the check.
    if id == T::from(0) { T::from(1) } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::parse(value).unwrap().traceparent(), value);
        for bad in [
            "",
            "00-0-0-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-zz-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_export_no_span_is_touched_and_received_contexts_go_on_as_before() {
        // Nothing in this crate's unit tests installs the exporter.
        assert!(!exporting());
        let received = TraceContext::new_root();
        let current = received.child();
        let span = tracing::info_span!("message", otel.name = tracing::field::Empty, trace_id = tracing::field::Empty);
        assert_eq!(TraceContext::of_span(&span), None);
        assert_eq!(TraceContext::start_span(&span, Some(received)), None);
        assert_eq!(adopt(&span, Some(received), current), current);
        assert_eq!(http_server(&span, &"GET", Some("/users/{id}"), Some(received), current), current);
        assert!(Messaging::send("events", "user.created").send_span(SpanKind::Producer).is_none());
        assert!(query_span("SELECT", "users").is_none());
        assert!(batch_query_span([&span], "SELECT", "users", 1).is_none());
        assert!(client_span("smtp send").is_none());
    }

    #[tokio::test]
    async fn outgoing_context_continues_the_current_trace() {
        let root = TraceContext::new_root();
        let child = root.scope(async { TraceContext::outgoing() }).await;
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.traceparent(), root.traceparent());
        assert!(TraceContext::current().is_none());
    }
}
