//! Which event a delivery is, for consumers that must act once per event (send one mail,
//! apply one projection) however often the event is delivered or emitted.
//!
//! [`EventId`] works for any [`Event`]:
//! - the AMQP `message_id` when the publisher set one (our clients and outboxes always do)
//!   and it is a [safe token](is_safe_token), as every UUID is;
//! - a `message_id` that is not a safe token (spaces, `<>`, CR/LF, …) is replaced by the UUID
//!   v5 of its bytes: a hostile id can neither inject a header nor break deduplication, since
//!   the same id always maps to the same replacement;
//! - no `message_id` at all (a stock NestJS `client.emit`): the UUID v5 named by the event's
//!   pattern in the namespace of its [`Event::dedup_key`], so every emit of the same event
//!   gets the same id. By default that key is derived from the whole payload; a contract
//!   about one entity names the entity instead (`user.created`: the user id).
//!
//! Guarantee: an event id is always a safe token, fit for a database key, a log field or the
//! `id-left` of a mail `Message-ID` (RFC 5322 dot-atom-text).

use uuid::Uuid;

pub use crate::contracts::payload_key;
use crate::{contracts::Event, server::MessageContext};

/// Safe tokens longer than this are hashed (a mail header line must stay under 998 bytes).
pub const MAX_EVENT_ID_LEN: usize = 128;

/// The namespace of ids that replace a `message_id` which is not a safe token.
const UNSAFE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a5e_3b7d_4e60_9a41_8d2f_c0b3_e715);

/// The identity of one event, the same for every delivery of it. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

/// An event without `message_id` whose payload could not be read for its default key.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive an id for a {pattern} event without message_id: its payload does not serialise")]
pub struct EventIdError {
    pattern: &'static str,
    #[source]
    source: serde_json::Error,
}

impl EventId {
    /// The id of `event` as delivered with `context`.
    pub fn of<E: Event>(context: &MessageContext, event: &E) -> Result<Self, EventIdError> {
        Self::from_message_id(context.message_id.as_deref(), event)
    }

    /// The id of `event`, delivered with `message_id` (blank counts as absent).
    pub fn from_message_id<E: Event>(message_id: Option<&str>, event: &E) -> Result<Self, EventIdError> {
        match message_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) if is_safe_token(id) => Ok(Self(id.to_owned())),
            Some(id) => Ok(Self(Uuid::new_v5(&UNSAFE_ID_NAMESPACE, id.as_bytes()).to_string())),
            None => Self::derived(event),
        }
    }

    /// The id of `event` when it carried no `message_id`: the same for every emit of it.
    pub fn derived<E: Event>(event: &E) -> Result<Self, EventIdError> {
        let key = event.dedup_key().map_err(|source| EventIdError { pattern: E::PATTERN, source })?;
        Ok(Self(Uuid::new_v5(&key, E::PATTERN.as_bytes()).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        id.0
    }
}

/// Whether `text` can be used as it is: at most [`MAX_EVENT_ID_LEN`] bytes, a dot-atom of
/// `[A-Za-z0-9_-]` words with no empty word (so no leading, trailing or double dot).
pub fn is_safe_token(text: &str) -> bool {
    text.len() <= MAX_EVENT_ID_LEN
        && text.split('.').all(|word| {
            !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::contracts::UserCreated;

    /// An event about nothing in particular: identified by its whole payload.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct PriceChanged {
        sku: String,
        cents: u64,
        tags: HashMap<String, String>,
    }

    impl Event for PriceChanged {
        const PATTERN: &'static str = "price.changed";
    }

    fn price(cents: u64) -> PriceChanged {
        let tags = (0..20).map(|n| (format!("k{n}"), n.to_string())).collect();
        PriceChanged { sku: "A-1".into(), cents, tags }
    }

    fn user(id: u128) -> UserCreated {
        let created_at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        UserCreated { id: Uuid::from_u128(id), email: "ada@example.com".into(), name: "Ada".into(), created_at }
    }

    #[test]
    fn uuids_and_outbox_ids_are_safe_tokens() {
        assert!(is_safe_token("4fb7e234-2daa-5fed-bdf6-93f8f482da80"));
        assert!(is_safe_token("outbox.42_a"));
    }

    #[test]
    fn hostile_or_odd_ids_are_not_safe_tokens() {
        for id in ["a b", "<x>", "a\r\nBcc: x", ".a", "a..b", "a.", "é", "", &"x".repeat(129)] {
            assert!(!is_safe_token(id), "{id:?}");
        }
    }

    #[test]
    fn a_safe_message_id_is_kept_and_an_unsafe_one_hashed_the_same_way_every_time() {
        let event = price(100);
        assert_eq!(EventId::from_message_id(Some("evt-1"), &event).unwrap().as_str(), "evt-1");
        assert_eq!(EventId::from_message_id(Some(" evt-1 "), &event).unwrap().as_str(), "evt-1");
        let hostile = "x>\r\nBcc: evil@example.com";
        let replaced = EventId::from_message_id(Some(hostile), &event).unwrap();
        assert!(is_safe_token(replaced.as_str()));
        assert_eq!(replaced, EventId::from_message_id(Some(hostile), &price(200)).unwrap(), "the id, not the payload");
    }

    #[test]
    fn without_message_id_any_event_gets_an_id_from_its_payload() {
        let derived = EventId::derived(&price(100)).unwrap();
        assert!(is_safe_token(derived.as_str()));
        assert_eq!(EventId::from_message_id(None, &price(100)).unwrap(), derived);
        assert_eq!(EventId::from_message_id(Some("  "), &price(100)).unwrap(), derived, "blank counts as absent");
        // Rebuilt map, other iteration order: still the same event.
        assert_eq!(EventId::derived(&price(100)).unwrap(), derived);
        assert_ne!(EventId::derived(&price(101)).unwrap(), derived);
    }

    #[test]
    fn the_payload_key_ignores_key_order() {
        #[derive(Serialize, Deserialize)]
        struct Reordered {
            cents: u64,
            tags: HashMap<String, String>,
            sku: String,
        }
        impl Event for Reordered {
            const PATTERN: &'static str = "price.changed";
        }
        let original = price(100);
        let reordered = Reordered { cents: original.cents, tags: original.tags.clone(), sku: original.sku.clone() };
        assert_eq!(payload_key(&reordered).unwrap(), payload_key(&original).unwrap());
    }

    #[test]
    fn the_same_payload_under_another_pattern_is_another_event() {
        #[derive(Serialize, Deserialize)]
        struct Other(PriceChanged);
        impl Event for Other {
            const PATTERN: &'static str = "price.corrected";
        }
        assert_ne!(EventId::derived(&Other(price(100))).unwrap(), EventId::derived(&price(100)).unwrap());
    }

    #[test]
    fn user_created_is_identified_by_the_user_as_before() {
        let id = EventId::derived(&user(7)).unwrap();
        assert_eq!(id.as_str(), Uuid::new_v5(&Uuid::from_u128(7), b"user.created").to_string());
        let renamed = UserCreated { name: "Ada L.".into(), ..user(7) };
        assert_eq!(EventId::derived(&renamed).unwrap(), id, "every emit about one user is one event");
        assert_ne!(EventId::derived(&user(8)).unwrap(), id);
    }
}
