//! How an event is identified here: [`shared::EventId`] (works for any [`shared::Event`]: a
//! safe AMQP `message_id` as it is, an unsafe one hashed, none derived from the event's
//! `dedup_key`, for `user.created` the user id) is the key of its row in `sent_mails` and the
//! left-hand side of the `Message-ID` of the mail it causes.

pub use shared::EventId;

/// The `Message-ID` of the mail for `event_id`, without angle brackets:
/// `{event_id}@{domain}`. Safe in a header: an event id is always a dot-atom of safe words,
/// and so is a [`MessageIdDomain`].
pub fn message_id(event_id: &EventId, domain: &MessageIdDomain) -> String {
    format!("{event_id}@{}", domain.0)
}

/// The right-hand side of the `Message-ID`s this service writes (`MESSAGE_ID_DOMAIN`): a
/// domain-like token (letters, digits, `-`, inner dots), so the header stays well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageIdDomain(String);

impl MessageIdDomain {
    pub fn parse(domain: &str) -> Option<Self> {
        let valid = shared::event_id::is_safe_token(domain) && !domain.contains('_');
        valid.then(|| Self(domain.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use shared::contracts::UserCreated;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn message_id_is_event_id_at_domain() {
        let domain = MessageIdDomain::parse("Mail.Example.com").unwrap();
        let id = EventId::from_message_id(Some("abc"), &user(7)).unwrap();
        assert_eq!(message_id(&id, &domain), "abc@mail.example.com");
    }

    #[test]
    fn domains_are_dot_atoms_without_underscores() {
        for bad in ["bad domain", "", "a_b.example", ".example", "example.", "a..b", "<x>"] {
            assert!(MessageIdDomain::parse(bad).is_none(), "{bad:?}");
        }
        assert!(MessageIdDomain::parse("notification-service").is_some());
    }

    #[test]
    fn user_created_without_message_id_is_identified_by_the_user() {
        assert_eq!(
            EventId::from_message_id(None, &user(7)).unwrap().as_str(),
            Uuid::new_v5(&Uuid::from_u128(7), b"user.created").to_string()
        );
    }

    fn user(id: u128) -> UserCreated {
        UserCreated {
            id: Uuid::from_u128(id),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            created_at: chrono::DateTime::default(),
        }
    }
}
