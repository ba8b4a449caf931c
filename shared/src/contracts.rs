//! Message contracts: each request type is tied to its pattern and its reply type, each event
//! type to its pattern, at compile time. A caller cannot send [`GetUser`] and decode anything
//! but a [`User`]; a handler registered for [`GetUser`] must return a [`User`].
//!
//! The untyped path ([`crate::Client::send_raw`], [`crate::Client::emit_raw`]) stays available
//! for tools and interop with patterns that have no Rust type.
//!
//! The contract types derive `schemars::JsonSchema`: with the packet envelope ([`envelope`])
//! and the catalog of who declares, sends and consumes what ([`services`]), they are what the
//! AsyncAPI document ([`crate::asyncapi`]) is generated from.

pub mod envelope;
pub mod services;
mod users;

pub use users::{GetUser, User, UserCreated};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

/// A request/response message (`client.send` ↔ `@MessagePattern` in NestJS).
pub trait Request: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the handler answers with.
    type Response: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The pattern as JSON text, exactly as it goes on the wire (e.g. `{"cmd":"get_user"}`).
    const PATTERN: &'static str;

    /// The pattern as a JSON value; a pattern that is not JSON is a plain string pattern.
    fn pattern() -> Value {
        pattern_value(Self::PATTERN)
    }
}

/// A fire-and-forget event (`client.emit` ↔ `@EventPattern` in NestJS). The pattern is also
/// the routing key on the events exchange, so it is a plain dotted string.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event pattern and routing key (e.g. `user.created`).
    const PATTERN: &'static str;

    /// What makes two emits the same event when they carry no `message_id` (a stock NestJS
    /// `client.emit`): the namespace of the derived [`EventId`](crate::event_id::EventId).
    /// By default the payload itself ([`payload_key`]); a
    /// contract about one entity may return the entity's id, so that every emit about it
    /// deduplicates even if another field differs.
    fn dedup_key(&self) -> Result<Uuid, serde_json::Error> {
        payload_key(self)
    }
}

/// The namespace of the default [`Event::dedup_key`], derived from the payload.
const PAYLOAD_NAMESPACE: Uuid = Uuid::from_u128(0x3d0a_91c4_58e2_4b7f_a6d3_0e19_c8f2_5b64);

/// The default [`Event::dedup_key`]: the UUID v5 of the payload as canonical JSON (object keys
/// sorted at every depth), so the same payload gives the same key whichever publisher built
/// it and in whatever key order.
pub fn payload_key<E: Event>(event: &E) -> Result<Uuid, serde_json::Error> {
    let payload: Value = serde_json::to_value(event)?;
    Ok(Uuid::new_v5(&PAYLOAD_NAMESPACE, crate::wire::render_sorted(&payload).as_bytes()))
}

/// Reads a pattern written as JSON text; anything that is not JSON is a string pattern.
pub fn pattern_value(pattern: &str) -> Value {
    serde_json::from_str(pattern).unwrap_or_else(|_| Value::from(pattern))
}
