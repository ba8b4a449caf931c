//! What a handler can ask for besides its payload: the server's state and the message context.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use crate::trace::TraceContext;

/// The server's shared state, cloned into each handler call (put an `Arc` or a pool inside).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

/// Everything about the message being handled except its payload.
#[derive(Debug, Clone)]
pub struct MessageContext {
    /// The pattern's routing form (`{"cmd":"get_user"}`, `user.created`).
    pub pattern: String,
    /// The queue the message was consumed from.
    pub queue: String,
    /// The AMQP `message_id` (the event id for events published by our clients).
    pub message_id: Option<String>,
    /// The request id (`correlation_id`) for requests.
    pub correlation_id: Option<String>,
    /// Whether the broker delivered this message before (a consumer died holding it, or on a
    /// quorum queue a non-zero `x-delivery-count`). Redeliveries are not attempts.
    pub redelivered: bool,
    /// Which delivery attempt this is through the retry queues, starting at 1.
    pub attempt: u32,
    /// The trace this message continues.
    pub trace: TraceContext,
    headers: FieldTable,
}

impl MessageContext {
    pub(crate) fn new(pattern: String, queue: String, properties: &lapin::BasicProperties, redelivered: bool) -> Self {
        let headers = properties.headers().clone().unwrap_or_default();
        let attempt = header_u32(&headers, crate::retry::ATTEMPT_HEADER).unwrap_or(1).max(1);
        let trace =
            TraceContext::from_headers(Some(&headers)).map_or_else(TraceContext::new_root, |parent| parent.child());
        Self {
            pattern,
            queue,
            message_id: properties.message_id().as_ref().map(ToString::to_string),
            correlation_id: properties.correlation_id().as_ref().map(ToString::to_string),
            redelivered: redelivered
                || header_u32(&headers, crate::retry::DELIVERY_COUNT_HEADER).is_some_and(|count| count > 0),
            attempt,
            trace,
            headers,
        }
    }

    /// One AMQP header rendered as JSON (strings, numbers, booleans, nested tables).
    pub fn header(&self, name: &str) -> Option<Value> {
        self.headers.inner().get(name).map(amqp_to_json)
    }

    /// Every AMQP header rendered as JSON.
    pub fn headers(&self) -> BTreeMap<String, Value> {
        self.headers.inner().iter().map(|(key, value)| (key.to_string(), amqp_to_json(value))).collect()
    }
}

/// Turns an AMQP field value into JSON, for handlers and dead-letter inspection.
pub fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(v) => Value::from(*v),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Float(v) => Value::from(*v),
        AMQPValue::Double(v) => Value::from(*v),
        AMQPValue::Timestamp(v) => Value::from(*v),
        AMQPValue::ShortString(v) => Value::from(v.as_str()),
        AMQPValue::LongString(v) => Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ByteArray(v) => Value::from(String::from_utf8_lossy(v.as_slice()).into_owned()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(table) => {
            Value::Object(table.inner().iter().map(|(key, value)| (key.to_string(), amqp_to_json(value))).collect())
        }
        AMQPValue::DecimalValue(_) | AMQPValue::Void => Value::Null,
    }
}

fn header_u32(headers: &FieldTable, name: &str) -> Option<u32> {
    amqp_to_json(headers.inner().get(name)?).as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Something a handler can take as an argument before its payload.
pub trait FromMessage<S>: Sized {
    fn from_message(context: &MessageContext, state: &S) -> Self;
}

impl<S: Clone> FromMessage<S> for State<S> {
    fn from_message(_: &MessageContext, state: &S) -> Self {
        Self(state.clone())
    }
}

impl<S> FromMessage<S> for MessageContext {
    fn from_message(context: &MessageContext, _: &S) -> Self {
        context.clone()
    }
}
