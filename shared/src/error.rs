//! The errors the transport gives its callers and takes from handlers.

use std::time::Duration;

use serde_json::Value;

use crate::wire::ErrorObject;

/// A boxed error kept as the `source` of our own errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a `send` produced no reply value. Each variant is a different decision for the caller
/// (HTTP maps them to 504, the remote status, 503 and 502).
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No complete reply arrived in time. A reply arriving later is dropped.
    #[error("no reply to {pattern} within {timeout:?}")]
    Timeout { pattern: String, timeout: Duration },
    /// The handler answered with an error object (`{"err": …}`).
    #[error("the remote handler for {pattern} answered with an error: {error}")]
    Remote { pattern: String, error: RemoteError },
    /// The remote service has no handler for the pattern.
    #[error("the remote service has no handler for {pattern}")]
    NoHandler { pattern: String },
    /// The broker cannot be reached, or the link broke while the request was pending.
    #[error("the broker is unavailable ({reason})")]
    Unavailable {
        reason: &'static str,
        #[source]
        source: Option<lapin::Error>,
    },
    /// A reply arrived but is not a NestJS reply, or its value is not the contract's type.
    #[error("the reply to {pattern} could not be decoded")]
    Decode {
        pattern: String,
        #[source]
        source: DecodeError,
    },
    /// The request could not be serialised.
    #[error("the request could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// What was wrong with an undecodable reply.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Packet(#[from] crate::wire::ReplyError),
    #[error("the response does not match the contract's type")]
    Type(#[source] serde_json::Error),
}

/// The `err` of an error reply, as the remote side sent it (object or string).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError(pub Value);

impl RemoteError {
    /// The numeric `status` of an error object (`{status:404, …}` → 404).
    pub fn status(&self) -> Option<u16> {
        self.0.get("status")?.as_u64().and_then(|code| u16::try_from(code).ok())
    }

    /// The `message` of an error object, or the error itself when it is a string.
    pub fn message(&self) -> Option<&str> {
        match &self.0 {
            Value::String(text) => Some(text),
            other => other.get("message")?.as_str(),
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why an `emit` was not confirmed. An emit either returns `Ok` after the broker's publisher
/// confirm or one of these: never a silent drop.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("the broker is unavailable ({reason})")]
    Unavailable {
        reason: &'static str,
        #[source]
        source: Option<lapin::Error>,
    },
    /// The broker refused the message (`basic.nack`).
    #[error("the broker refused the message")]
    Nacked,
    /// Published to a queue that does not exist (`basic.return`).
    #[error("no queue {target} to deliver to")]
    Unroutable { target: String },
    #[error("the event could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// What a request handler raises: the `err` sent back to the caller, like NestJS's
/// `RpcException`, plus the cause kept for our own logs.
#[derive(Debug)]
pub struct RpcException {
    error: Value,
    source: Option<BoxError>,
}

impl RpcException {
    /// An error object `{status, message}` for the caller.
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        ErrorObject::new(status, message).into()
    }

    /// Any JSON error value, sent as is (NestJS sends `RpcException`'s argument unchanged).
    pub fn value(error: Value) -> Self {
        Self { error, source: None }
    }

    /// A failure the caller should not see the details of: answered with NestJS's
    /// `{"status":"error","message":"Internal server error"}`; `source` is logged.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self { error: error_value(ErrorObject::internal()), source: Some(source.into()) }
    }

    /// Keeps a cause for the logs without changing what the caller sees.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What the caller receives in `err`.
    pub fn error(&self) -> &Value {
        &self.error
    }

    /// Whether this is the generic internal error (logged as an error, not as an outcome).
    pub fn is_internal(&self) -> bool {
        self.error.get("status").and_then(Value::as_str) == Some("error")
    }

    pub(crate) fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl From<ErrorObject> for RpcException {
    fn from(error: ErrorObject) -> Self {
        Self { error: error_value(error), source: None }
    }
}

fn error_value(error: ErrorObject) -> Value {
    serde_json::json!({"status": error.status, "message": error.message})
}

/// What an event handler raises: whether to try again later or to park the event at once.
#[derive(Debug)]
pub struct EventFailure {
    kind: FailureKind,
    source: BoxError,
}

/// How the transport treats a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retried with exponential backoff through the delay queues, then parked.
    Transient,
    /// Parked in `<queue>.dlq` at once: retrying cannot help.
    Permanent,
}

impl EventFailure {
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self { kind: FailureKind::Transient, source: source.into() }
    }

    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self { kind: FailureKind::Permanent, source: source.into() }
    }

    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

/// Renders an error and its whole `source` chain on one line, for logs and DLQ headers.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
