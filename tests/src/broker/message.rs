//! A message taken off a queue by the probe, in plain Rust types.

use std::collections::BTreeMap;

use lapin::message::Delivery;
use serde_json::Value;

use super::fields::table_to_json;

/// A message as RabbitMQ delivered it: body, where it came from, and its properties, with
/// the headers converted to JSON (see [`super::fields::value_to_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbedMessage {
    /// The raw body.
    pub body: Vec<u8>,
    /// The `headers` property; empty when the message had none.
    pub headers: BTreeMap<String, Value>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The `message-id` property.
    pub message_id: Option<String>,
    /// The `correlation-id` property.
    pub correlation_id: Option<String>,
    /// The `reply-to` property.
    pub reply_to: Option<String>,
    /// The `delivery-mode` property: 2 persistent, 1 transient.
    pub delivery_mode: Option<u8>,
    /// The `content-type` property.
    pub content_type: Option<String>,
    /// The `type` property (the message's kind, by AMQP convention).
    pub kind: Option<String>,
    /// The `timestamp` property (seconds since the Unix epoch).
    pub timestamp: Option<u64>,
    /// Whether RabbitMQ had delivered it before (and it was requeued).
    pub redelivered: bool,
}

impl ProbedMessage {
    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON; the message shows the body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("message body is not JSON ({error}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&Value> {
        self.headers.get(name)
    }
}

impl From<&Delivery> for ProbedMessage {
    fn from(delivery: &Delivery) -> Self {
        let properties = &delivery.properties;
        let text = |value: &Option<lapin::types::ShortString>| value.as_ref().map(|s| s.as_str().to_owned());
        ProbedMessage {
            body: delivery.data.clone(),
            headers: properties.headers().as_ref().map(table_to_json).unwrap_or_default(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            exchange: delivery.exchange.as_str().to_owned(),
            message_id: text(properties.message_id()),
            correlation_id: text(properties.correlation_id()),
            reply_to: text(properties.reply_to()),
            delivery_mode: *properties.delivery_mode(),
            content_type: text(properties.content_type()),
            kind: text(properties.kind()),
            timestamp: *properties.timestamp(),
            redelivered: delivery.redelivered,
        }
    }
}
