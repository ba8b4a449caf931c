//! The NestJS packet envelope around every contract payload (PROTOCOL.md), as types whose
//! JSON Schemas the AsyncAPI document ([`crate::asyncapi`]) is generated from.
//!
//! [`crate::wire`] encodes and parses the packets on the hot path without these types; they
//! describe the same JSON, and the tests below hold them to what `wire` produces and to the
//! interop vectors of PROTOCOL.md (every packet deserialises, with no field left over).
//! A request or event packet's schema pins its `pattern` to the contract's pattern.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Event, Request, pattern_value};

/// `client.send(pattern, data)`: `{"pattern": P, "data": D, "id": I}`, where `I` equals the
/// AMQP `correlation_id` and the reply goes to the `reply_to` property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPacket<R> {
    pub pattern: Value,
    pub data: R,
    pub id: String,
}

/// `client.emit(pattern, data)`: `{"pattern": P, "data": D}` (no `id`: that is what makes it
/// an event); the event id travels in the AMQP `message_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPacket<E> {
    pub pattern: Value,
    pub data: E,
}

/// A successful reply: `{"response": R, "isDisposed": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessReply<T> {
    pub response: T,
    pub is_disposed: bool,
}

/// A handler's error: `{"err": {status, message}, "isDisposed": true}` (NestJS
/// `RpcException`, or `{"status":"error","message":"Internal server error"}` for any other
/// failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorReply {
    pub err: ErrorBody,
    /// Always `true`: the reply completes the call.
    #[schemars(schema_with = "always_true")]
    pub is_disposed: bool,
}

/// The error object of an [`ErrorReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// An HTTP-like status (400 malformed id, 404 unknown user, 503 database unavailable), or
    /// `"error"` for an internal failure.
    #[schemars(schema_with = "error_status")]
    pub status: Value,
    pub message: String,
}

/// The answer of a service with no handler for the pattern (NestJS's own wording, no
/// `isDisposed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoHandlerReply {
    /// The request's id.
    pub id: String,
    #[schemars(schema_with = "no_handler_message")]
    pub err: String,
    #[schemars(schema_with = "status_error")]
    pub status: String,
}

/// Names the generic packets after their contract (`GetUserRequest`, `UserCreatedEvent`).
fn named<T: JsonSchema>(suffix: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{}{suffix}", T::schema_name()))
}

impl<R: Request + JsonSchema> JsonSchema for RequestPacket<R> {
    fn schema_name() -> Cow<'static, str> {
        named::<R>("Request")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": format!("A NestJS request packet for {}; `id` equals the AMQP correlation_id.", R::PATTERN),
            "properties": {
                "pattern": { "const": R::pattern() },
                "data": generator.subschema_for::<R>(),
                "id": { "type": "string", "description": "Opaque (NestJS makes 21 hex characters); equals correlation_id." },
            },
            "required": ["pattern", "data", "id"],
            "additionalProperties": false,
        })
    }
}

impl<E: Event + JsonSchema> JsonSchema for EventPacket<E> {
    fn schema_name() -> Cow<'static, str> {
        named::<E>("Event")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": format!("A NestJS event packet for {} (no id: an event, not a request).", E::PATTERN),
            "properties": {
                "pattern": { "const": pattern_value(E::PATTERN) },
                "data": generator.subschema_for::<E>(),
            },
            "required": ["pattern", "data"],
            "additionalProperties": false,
        })
    }
}

impl<T: JsonSchema> JsonSchema for SuccessReply<T> {
    fn schema_name() -> Cow<'static, str> {
        named::<T>("Reply")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A successful NestJS reply.",
            "properties": {
                "response": generator.subschema_for::<T>(),
                "isDisposed": { "const": true },
            },
            "required": ["response", "isDisposed"],
            "additionalProperties": false,
        })
    }
}

fn always_true(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": true })
}

fn error_status(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "integer", "minimum": 100, "maximum": 599 },
            { "const": "error" },
        ]
    })
}

fn no_handler_message(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": crate::wire::NO_HANDLER_MESSAGE })
}

fn status_error(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": "error" })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::{
        contracts::{GetUser, User, UserCreated},
        wire::{self, ErrorObject},
    };

    fn parses<T: DeserializeOwned>(bytes: &[u8]) -> T {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|error| panic!("{} does not fit: {error}", String::from_utf8_lossy(bytes)))
    }

    #[test]
    fn the_protocol_vectors_fit_the_envelope_types() {
        let request: RequestPacket<GetUser> = parses(
            br#"{"pattern":{"cmd":"get_user"},"data":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80"},"id":"61a2afc5a24f312c86aad"}"#,
        );
        assert_eq!(request.pattern, GetUser::pattern());
        let event: EventPacket<UserCreated> = parses(
            br#"{"pattern":"user.created","data":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"}}"#,
        );
        assert_eq!(event.pattern, json!("user.created"));
        let _: SuccessReply<User> = parses(
            br#"{"response":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"},"isDisposed":true}"#,
        );
        let _: ErrorReply = parses(br#"{"err":{"status":404,"message":"user not found"},"isDisposed":true}"#);
        let _: ErrorReply =
            parses(br#"{"err":{"status":"error","message":"Internal server error"},"isDisposed":true}"#);
        let _: NoHandlerReply = parses(
            br#"{"id":"61a2afc5a24f312c86aad","err":"There is no matching message handler defined in the remote service.","status":"error"}"#,
        );
    }

    #[test]
    fn what_the_wire_encodes_fits_the_envelope_types() {
        let user: User = parses(
            br#"{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"a@b.c","name":"A","createdAt":"2024-01-01T00:07:00.000Z"}"#,
        );
        let reply: SuccessReply<User> = parses(&wire::encode_success(&user).unwrap());
        assert!(reply.is_disposed);
        let error: ErrorReply = parses(&wire::encode_error(&ErrorObject::new(404, "user not found")).unwrap());
        assert_eq!(error.err.status, json!(404));
        let _: ErrorReply = parses(&wire::encode_error(&ErrorObject::internal()).unwrap());
        let _: NoHandlerReply = parses(&wire::encode_no_handler("abc"));
        let pattern = GetUser::pattern();
        let data = GetUser { id: "x".into() };
        let packet = serde_json::to_vec(&wire::RequestPacket { pattern: &pattern, data: &data, id: "abc" }).unwrap();
        let _: RequestPacket<GetUser> = parses(&packet);
        let pattern = json!("user.created");
        let packet = serde_json::to_vec(&wire::EventPacket { pattern: &pattern, data: &user }).unwrap();
        let _: EventPacket<User> = parses(&packet);
    }
}
