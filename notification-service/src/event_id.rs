//! How an event is identified: the key of its record in `sent_mails` and the left-hand side
//! of the `Message-ID` of the mail it causes. Works for any [`shared::Event`] that names what
//! it is about ([`Keyed`]).

use shared::{Event, MessageContext, contracts::UserCreated};
use uuid::Uuid;

/// Message ids longer than this are hashed (a Message-ID line should stay well under 998 bytes).
const MAX_EVENT_ID_LEN: usize = 128;

/// The namespace of ids derived from a `message_id` that is unsafe to put in a mail header.
const UNSAFE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a5e_3b7d_4e60_9a41_8d2f_c0b3_e715);

/// An event that names the entity it is about, so that deliveries without a `message_id`
/// still get a stable id: the same event about the same entity is the same event.
pub trait Keyed: Event {
    /// The entity's id (for `user.created`, the user's).
    fn key(&self) -> Uuid;
}

impl Keyed for UserCreated {
    fn key(&self) -> Uuid {
        self.id
    }
}

/// The identity of one event, deterministic for every delivery of it.
///
/// - The AMQP `message_id` when the publisher set one (our clients and auth-service's outbox
///   always do) and it is a safe token: letters, digits, `-`, `_` and inner dots, at most
///   128 characters (every UUID is).
/// - A `message_id` that is not safe (spaces, `<>`, CR/LF, …) is replaced by the UUID v5 of its
///   bytes, so a hostile id can neither inject a header nor break the dedup: the same id
///   always maps to the same replacement.
/// - No `message_id` at all (a stock NestJS `client.emit`): the UUID v5 with the **event's
///   [`Keyed::key`] as namespace and its pattern as name** (for `user.created`: the user id and
///   `user.created`). Every NestJS emit of the same user therefore has the same id, which is
///   what makes them deduplicate.
///
/// Guarantee: the value is always safe as the `id-left` of a `Message-ID` (RFC 5322
/// dot-atom-text) and as a database key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// The id of `event` as delivered with `context`.
    pub fn of<E: Keyed>(context: &MessageContext, event: &E) -> Self {
        Self::from_message_id::<E>(context.message_id.as_deref(), event.key())
    }

    /// The id of an `E` about the entity `key` that carried `message_id`.
    pub fn from_message_id<E: Event>(message_id: Option<&str>, key: Uuid) -> Self {
        match message_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) if is_safe_token(id) => Self(id.to_owned()),
            Some(id) => Self(Uuid::new_v5(&UNSAFE_ID_NAMESPACE, id.as_bytes()).to_string()),
            None => Self::derived::<E>(key),
        }
    }

    /// The id of an `E` about the entity `key` that carried no `message_id`.
    pub fn derived<E: Event>(key: Uuid) -> Self {
        Self(Uuid::new_v5(&key, E::PATTERN.as_bytes()).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Message-ID` of the mail for this event, without angle brackets:
    /// `{event_id}@{domain}`.
    pub fn message_id(&self, domain: &MessageIdDomain) -> String {
        format!("{}@{}", self.0, domain.0)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The right-hand side of the `Message-ID`s this service writes (`MESSAGE_ID_DOMAIN`): a
/// domain-like token (letters, digits, `-`, inner dots), so the header stays well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageIdDomain(String);

impl MessageIdDomain {
    pub fn parse(domain: &str) -> Option<Self> {
        let valid = is_safe_token(domain) && !domain.contains('_');
        valid.then(|| Self(domain.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A dot-atom made of `[A-Za-z0-9_-]` words: no empty word, so no leading, trailing or double dot.
fn is_safe_token(text: &str) -> bool {
    text.len() <= MAX_EVENT_ID_LEN
        && text.split('.').all(|word| {
            !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_outbox_ids_are_kept_as_they_are() {
        assert!(is_safe_token("4fb7e234-2daa-5fed-bdf6-93f8f482da80"));
        assert!(is_safe_token("outbox.42_a"));
    }

    #[test]
    fn hostile_or_odd_ids_are_not_safe_tokens() {
        for id in ["a b", "<x>", "a\r\nBcc: x", ".a", "a..b", "a.", "é", &"x".repeat(129)] {
            assert!(!is_safe_token(id), "{id:?}");
        }
    }

    type Created = UserCreated;

    #[test]
    fn message_id_is_used_when_safe_and_hashed_when_not() {
        let user = Uuid::from_u128(7);
        assert_eq!(EventId::from_message_id::<Created>(Some("evt-1"), user).as_str(), "evt-1");
        let hostile = EventId::from_message_id::<Created>(Some("x>\r\nBcc: evil@example.com"), user);
        assert!(is_safe_token(hostile.as_str()));
        assert_eq!(hostile, EventId::from_message_id::<Created>(Some("x>\r\nBcc: evil@example.com"), user));
        assert_eq!(EventId::from_message_id::<Created>(Some(" "), user), EventId::derived::<Created>(user));
        assert_eq!(EventId::from_message_id::<Created>(None, user), EventId::derived::<Created>(user));
    }

    #[test]
    fn derived_ids_are_deterministic_per_user() {
        let user = Uuid::from_u128(7);
        assert_eq!(EventId::derived::<Created>(user), EventId::derived::<Created>(user));
        assert_ne!(EventId::derived::<Created>(user), EventId::derived::<Created>(Uuid::from_u128(8)));
        assert_eq!(EventId::derived::<Created>(user).as_str(), Uuid::new_v5(&user, b"user.created").to_string());
    }

    /// Another event about the same entity gets another id: the pattern is part of it.
    #[test]
    fn derived_ids_differ_per_event_type() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct UserDeleted {
            id: Uuid,
        }
        impl Event for UserDeleted {
            const PATTERN: &'static str = "user.deleted";
        }
        impl Keyed for UserDeleted {
            fn key(&self) -> Uuid {
                self.id
            }
        }
        let user = Uuid::from_u128(7);
        let deleted = UserDeleted { id: user };
        assert_eq!(
            EventId::derived::<UserDeleted>(deleted.key()).as_str(),
            Uuid::new_v5(&user, b"user.deleted").to_string()
        );
        assert_ne!(EventId::derived::<UserDeleted>(user), EventId::derived::<Created>(user));
    }

    #[test]
    fn message_id_is_event_id_at_domain() {
        let domain = MessageIdDomain::parse("Mail.Example.com").unwrap();
        let id = EventId("abc".into());
        assert_eq!(id.message_id(&domain), "abc@mail.example.com");
        assert!(MessageIdDomain::parse("bad domain").is_none());
        assert!(MessageIdDomain::parse("").is_none());
    }
}
