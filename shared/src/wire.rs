//! The NestJS 11 `Transport.RMQ` packet format, byte for byte.
//!
//! Three packets travel on the wire (see `PROTOCOL.md` in the handbook):
//! a request `{"pattern","data","id"}`, an event `{"pattern","data"}` (no `id`: that absence
//! is the only thing telling an event from a request) and a reply, whose shapes are listed on
//! [`Reply`]. Patterns are sent as the caller wrote them but *routed* by their normalised
//! form ([`route_key`]): object keys sorted recursively, compact JSON, and a string that parses
//! as JSON routed like that JSON value.

use serde::{Deserialize, Deserializer, Serialize, de::IgnoredAny};
use serde_json::{Value, value::RawValue};

/// What a NestJS server answers when no message handler matches a request's pattern.
pub const NO_HANDLER_MESSAGE: &str = "There is no matching message handler defined in the remote service.";

/// The message of the error object NestJS sends for any error that is not an `RpcException`.
pub const INTERNAL_ERROR_MESSAGE: &str = "Internal server error";

/// The routing form of a pattern: the key handlers are registered and looked up by.
///
/// Strings that are not JSON stay as they are (`user.created`); anything else becomes compact
/// JSON with object keys sorted at every depth, so `{"role":"user","cmd":"x"}` and
/// `{"cmd":"x","role":"user"}` (and the string `"{\"cmd\":\"x\",\"role\":\"user\"}"`) share
/// one key.
pub fn route_key(pattern: &Value) -> String {
    match pattern {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => render_sorted(&parsed),
            _ => text.clone(),
        },
        other => render_sorted(other),
    }
}

/// [`route_key`] of a pattern given as raw JSON text. A plain string (no escapes, not JSON
/// text itself) is its own key and needs no parsing.
pub fn route_key_raw(pattern: &RawValue) -> String {
    let text = pattern.get();
    if let Some(inner) = text.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
        let container = matches!(inner.trim_start().as_bytes().first(), Some(b'{' | b'['));
        if !inner.contains('\\') && !container {
            return inner.to_owned();
        }
    }
    route_key(&to_value(pattern))
}

/// Compact JSON with object keys sorted at every depth: one text per value, whatever order
/// its keys were built in (routing keys, and the payload-derived event ids of `event_id`).
pub(crate) fn render_sorted(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(value, &mut out);
    out
}

// Sorted explicitly rather than relying on serde_json's map type: a dependency enabling
// `preserve_order` would otherwise change routing for the whole workspace.
fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, inner)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_sorted(inner, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, inner) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_sorted(inner, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An incoming packet on a server queue, before routing. `data` stays raw JSON text until the
/// handler's contract type reads it, so it is parsed once, straight into that type.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A request (`id` present): the sender waits for a [`Reply`].
    Request { pattern: Box<RawValue>, data: Box<RawValue>, id: String },
    /// An event (no `id`): nobody waits for an answer.
    Event { pattern: Box<RawValue>, data: Box<RawValue> },
}

/// The fields of a packet, borrowed from the body; `Some` also for a field that is `null`.
#[derive(Deserialize)]
struct PacketFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    pattern: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// The fields of a reply, borrowed from the body; `Some` also for a field that is `null`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    response: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    err: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    is_disposed: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// A field that is there, `null` included (a plain `Option` reads `null` as absent).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn is_null(value: &RawValue) -> bool {
    value.get() == "null"
}

/// Why a body could not be read as a JSON object of fields.
enum ObjectError {
    NotJson(serde_json::Error),
    NotAnObject,
}

/// Reads the fields of a JSON object body. Anything but an object is refused first: serde
/// would also read a JSON array into a struct.
fn read_object<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ObjectError> {
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => ObjectError::NotAnObject,
            Err(error) => ObjectError::NotJson(error),
        });
    }
    serde_json::from_slice(body).map_err(ObjectError::NotJson)
}

impl From<ObjectError> for PacketError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::NotJson(error) => Self::NotJson(error),
            ObjectError::NotAnObject => Self::NotAnObject,
        }
    }
}

impl From<ObjectError> for ReplyError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::NotJson(error) => Self::NotJson(error),
            ObjectError::NotAnObject => Self::UnknownShape,
        }
    }
}

/// A field's raw JSON as a value; cannot fail, the text was validated when it was read.
fn to_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Why a message on a server queue could not be read as a NestJS packet.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("the body is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("the packet has no `pattern`")]
    MissingPattern,
    #[error("the packet's `id` is not a string")]
    InvalidId,
}

impl Incoming {
    /// Reads a packet from a message body.
    pub fn parse(body: &[u8]) -> Result<Self, PacketError> {
        let fields: PacketFields = read_object(body)?;
        let pattern = fields.pattern.ok_or(PacketError::MissingPattern)?.to_owned();
        let data = fields.data.unwrap_or(RawValue::NULL).to_owned();
        match fields.id {
            None => Ok(Self::Event { pattern, data }),
            Some(id) if is_null(id) => Ok(Self::Event { pattern, data }),
            Some(id) => match serde_json::from_str::<String>(id.get()) {
                Ok(id) => Ok(Self::Request { pattern, data, id }),
                Err(_) => Err(PacketError::InvalidId),
            },
        }
    }

    /// The pattern as sent, raw JSON text.
    pub fn pattern(&self) -> &RawValue {
        match self {
            Self::Request { pattern, .. } | Self::Event { pattern, .. } => pattern,
        }
    }

    /// The pattern's routing form ([`route_key`]).
    pub fn route_key(&self) -> String {
        route_key_raw(self.pattern())
    }
}

/// The body of a request as NestJS's `ClientProxy.send` writes it.
#[derive(Debug, Serialize)]
pub struct RequestPacket<'a, T: ?Sized> {
    pub pattern: &'a Value,
    /// Serialised straight from the caller's type, so fields keep their declared order.
    pub data: &'a T,
    pub id: &'a str,
}

/// The body of an event as NestJS's `ClientProxy.emit` writes it.
#[derive(Debug, Serialize)]
pub struct EventPacket<'a, T: ?Sized> {
    pub pattern: &'a Value,
    /// Serialised straight from the event's type, so fields keep their declared order.
    pub data: &'a T,
}

/// Every reply shape a NestJS server produces, and that our server produces in turn.
/// `T` holds the JSON of `response` and `err`: a [`Value`], or raw text ([`Reply::parse_raw`])
/// for a reader that decodes it straight into a type of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T = Value> {
    /// `{"response": R, "isDisposed": true}`
    Success(T),
    /// `{"err": E, "isDisposed": true}`: `E` is the `RpcException` error (object or string).
    Error(T),
    /// `{"id": I, "err": "There is no matching message handler …", "status": "error"}`
    NoHandler { id: String },
    /// `{"response": R}` without `isDisposed`: one item of a streamed reply, more follow.
    Partial(T),
    /// `{"isDisposed": true}` alone: the end of a streamed reply.
    Disposed,
}

/// A reply body that is not one of the NestJS reply shapes.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the reply is not a NestJS reply packet")]
    UnknownShape,
}

impl Reply {
    /// Renders the reply body exactly as a NestJS 11 server would, keys in NestJS's order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let encoded = match self {
            Self::Success(response) => encode_success(response),
            Self::Error(err) => encode_error(err),
            Self::NoHandler { id } => return encode_no_handler(id),
            Self::Partial(response) => encode(&ReplyBody { response: Some(response), ..ReplyBody::EMPTY }),
            Self::Disposed => encode(&ReplyBody::<Value> { is_disposed: Some(true), ..ReplyBody::EMPTY }),
        };
        // Serialising a `serde_json::Value` cannot fail.
        encoded.unwrap_or_default()
    }

    /// Reads a reply body.
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        Ok(match Reply::parse_raw(body)? {
            Reply::Success(response) => Self::Success(to_value(&response)),
            Reply::Error(err) => Self::Error(to_value(&err)),
            Reply::NoHandler { id } => Self::NoHandler { id },
            Reply::Partial(response) => Self::Partial(to_value(&response)),
            Reply::Disposed => Self::Disposed,
        })
    }
}

impl Reply<Box<RawValue>> {
    /// Reads a reply body, keeping `response` and `err` as raw JSON text.
    pub fn parse_raw(body: &[u8]) -> Result<Self, ReplyError> {
        let fields: ReplyFields = read_object(body)?;
        let disposed = fields.is_disposed.is_some_and(|flag| flag.get() == "true");
        if let Some(err) = fields.err.filter(|err| !is_null(err)) {
            let no_handler =
                !disposed && serde_json::from_str::<String>(err.get()).is_ok_and(|m| m == NO_HANDLER_MESSAGE);
            return match fields.id.map(|id| serde_json::from_str::<String>(id.get())) {
                Some(Ok(id)) if no_handler => Ok(Self::NoHandler { id }),
                _ => Ok(Self::Error(err.to_owned())),
            };
        }
        match (fields.response, disposed) {
            (Some(response), true) => Ok(Self::Success(response.to_owned())),
            (Some(response), false) => Ok(Self::Partial(response.to_owned())),
            (None, true) => Ok(Self::Disposed),
            (None, false) => Err(ReplyError::UnknownShape),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplyBody<'a, T: ?Sized> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    err: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_disposed: Option<bool>,
}

impl<T: ?Sized> ReplyBody<'_, T> {
    const EMPTY: Self = Self { id: None, response: None, err: None, status: None, is_disposed: None };
}

fn encode<T: Serialize + ?Sized>(body: &ReplyBody<'_, T>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(body)
}

/// `{"response": R, "isDisposed": true}`, with `R` serialised straight from the handler's
/// type so its fields keep their declared order, as NestJS keeps a JavaScript object's.
pub fn encode_success<T: Serialize + ?Sized>(response: &T) -> serde_json::Result<Vec<u8>> {
    encode(&ReplyBody { response: Some(response), is_disposed: Some(true), ..ReplyBody::EMPTY })
}

/// `{"err": E, "isDisposed": true}`.
pub fn encode_error<T: Serialize + ?Sized>(err: &T) -> serde_json::Result<Vec<u8>> {
    encode(&ReplyBody { err: Some(err), is_disposed: Some(true), ..ReplyBody::EMPTY })
}

/// `{"id": I, "err": "There is no matching message handler …", "status": "error"}`.
pub fn encode_no_handler(id: &str) -> Vec<u8> {
    let body = ReplyBody { id: Some(id), err: Some(NO_HANDLER_MESSAGE), status: Some("error"), ..ReplyBody::EMPTY };
    encode(&body).unwrap_or_default()
}

/// Serde adapter for timestamps as JavaScript's `Date.prototype.toISOString` renders them:
/// UTC, milliseconds, `Z` (`2024-01-01T00:07:00.000Z`). Use with
/// `#[serde(with = "shared::wire::js_date")]`; reading accepts any RFC 3339 timestamp.
pub mod js_date {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text).map(|at| at.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }

    /// Renders one timestamp in the `toISOString` form.
    pub fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// The error object our services put in `err`, shaped like NestJS's `{status, message}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// An HTTP-like status (`404`) or NestJS's `"error"` for internal failures.
    pub status: Value,
    pub message: String,
}

impl ErrorObject {
    /// An error with a numeric status, as our handlers raise them.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status: Value::from(status), message: message.into() }
    }

    /// NestJS's answer to any error that is not an `RpcException`.
    pub fn internal() -> Self {
        Self { status: Value::from("error"), message: INTERNAL_ERROR_MESSAGE.into() }
    }

    /// The numeric status, when there is one.
    pub fn status_code(&self) -> Option<u16> {
        self.status.as_u64().and_then(|code| u16::try_from(code).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_patterns_route_by_sorted_keys_at_every_depth() {
        let a = json!({"role": "user", "cmd": "get_by_id", "x": {"b": 1, "a": [{"d": 1, "c": 2}]}});
        assert_eq!(route_key(&a), r#"{"cmd":"get_by_id","role":"user","x":{"a":[{"c":2,"d":1}],"b":1}}"#);
    }

    #[test]
    fn json_strings_route_like_the_value_they_hold() {
        assert_eq!(
            route_key(&json!(r#"{"role":"user","cmd":"get_by_id"}"#)),
            route_key(&json!({"cmd": "get_by_id", "role": "user"}))
        );
        assert_eq!(route_key(&json!("user.created")), "user.created");
        assert_eq!(route_key(&json!("42")), "42");
    }

    #[test]
    fn raw_patterns_route_like_parsed_ones() {
        let patterns = [
            r#""user.created""#,
            r#""{\"role\":\"user\",\"cmd\":\"x\"}""#,
            r#"" [1, {\"b\":1,\"a\":2}]""#,
            r#""tab\there""#,
            r#""42""#,
            r#"{"role":"user","cmd":"x"}"#,
            r#"{ "cmd" : "x" }"#,
            "42",
            "null",
            "[2,1]",
        ];
        for text in patterns {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(route_key_raw(&raw), route_key(&value), "{text}");
        }
    }

    #[test]
    fn protocol_vectors_parse_into_the_right_packets() {
        let request = br#"{"pattern":{"cmd":"get_user"},"data":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80"},"id":"61a2afc5a24f312c86aad"}"#;
        assert!(
            matches!(Incoming::parse(request).unwrap(), Incoming::Request { id, .. } if id == "61a2afc5a24f312c86aad")
        );
        let event = br#"{"pattern":"user.created","data":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"}}"#;
        assert!(matches!(Incoming::parse(event).unwrap(), Incoming::Event { .. }));
        assert!(matches!(Incoming::parse(b"nope"), Err(PacketError::NotJson(_))));
        assert!(matches!(Incoming::parse(br#"{"data":1}"#), Err(PacketError::MissingPattern)));
        assert!(matches!(Incoming::parse(br#"[{"cmd":"x"},1,"id"]"#), Err(PacketError::NotAnObject)));
        assert!(matches!(Incoming::parse(br#"{"pattern":"x","id":7}"#), Err(PacketError::InvalidId)));
        let Incoming::Request { pattern, data, .. } = Incoming::parse(br#" {"pattern":null,"id":"1"}"#).unwrap() else {
            panic!("a request")
        };
        assert_eq!((pattern.get(), data.get()), ("null", "null"));
        let Incoming::Event { data, .. } =
            Incoming::parse(br#"{"pattern":"e","data":{"a": [1, "\u00e9"]},"id":null}"#).unwrap()
        else {
            panic!("an event")
        };
        assert_eq!(data.get(), r#"{"a": [1, "\u00e9"]}"#);
    }

    #[test]
    fn every_reply_shape_round_trips() {
        let vectors = [
            r#"{"response":{"createdAt":"2024-01-01T00:07:00.000Z","email":"ada@example.com","id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","name":"Ada"},"isDisposed":true}"#,
            r#"{"err":{"message":"user not found","status":404},"isDisposed":true}"#,
            r#"{"err":{"message":"Internal server error","status":"error"},"isDisposed":true}"#,
            r#"{"id":"61a2afc5a24f312c86aad","err":"There is no matching message handler defined in the remote service.","status":"error"}"#,
            r#"{"response":1}"#,
            r#"{"isDisposed":true}"#,
        ];
        for vector in vectors {
            let reply = Reply::parse(vector.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(reply.to_bytes()).unwrap(), vector);
        }
        assert_eq!(
            Reply::parse(br#"{"id":"61a2afc5a24f312c86aad","err":"There is no matching message handler defined in the remote service.","status":"error"}"#).unwrap(),
            Reply::NoHandler { id: "61a2afc5a24f312c86aad".into() }
        );
        assert!(Reply::parse(br#"{"foo":1}"#).is_err());
        assert!(matches!(Reply::parse(b"[1]"), Err(ReplyError::UnknownShape)));
        assert!(matches!(Reply::parse(b"{"), Err(ReplyError::NotJson(_))));
        assert_eq!(Reply::parse(br#"{"response":null,"isDisposed":true}"#).unwrap(), Reply::Success(Value::Null));
        assert_eq!(Reply::parse(br#"{"response":null}"#).unwrap(), Reply::Partial(Value::Null));
        assert_eq!(Reply::parse(br#"{"err":null,"response":2,"isDisposed":true}"#).unwrap(), Reply::Success(2.into()));
        assert_eq!(
            Reply::parse(
                br#"{"err":"There is no matching message handler defined in the remote service.","isDisposed":true}"#
            )
            .unwrap(),
            Reply::Error(NO_HANDLER_MESSAGE.into()),
            "a disposed error is an error reply, whatever its text"
        );
    }

    #[test]
    fn dates_render_like_to_iso_string() {
        let at = chrono::DateTime::parse_from_rfc3339("2024-01-01T01:07:00+01:00").unwrap();
        assert_eq!(js_date::format(&at.with_timezone(&chrono::Utc)), "2024-01-01T00:07:00.000Z");
    }
}
