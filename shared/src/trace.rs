//! W3C trace context (`traceparent`) carried in AMQP headers.
//!
//! The transport keeps the current [`TraceContext`] in a task-local: `send` and `emit` inject
//! a child of it (or a new root) as the `traceparent` header, and the server continues the
//! context it receives for the duration of each handler, so one trace id follows a flow from
//! the HTTP request through the outbox, the broker and every consumer.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable};

/// The AMQP header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
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

    /// The context to put on an outgoing message: a child of the current one, else a new root.
    pub fn outgoing() -> Self {
        Self::current().map_or_else(Self::new_root, |current| current.child())
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

    #[tokio::test]
    async fn outgoing_context_continues_the_current_trace() {
        let root = TraceContext::new_root();
        let child = root.scope(async { TraceContext::outgoing() }).await;
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.traceparent(), root.traceparent());
        assert!(TraceContext::current().is_none());
    }
}
