//! The user contracts shared by auth-, user- and notification-service (ARCHITECTURE §5).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Event, Request};
use crate::wire::js_date;

/// `{cmd:"get_user"}`: one user's profile by id.
///
/// The id is a string on the wire so that a malformed id reaches the handler, which answers
/// `{status:400, …}` naming the problem instead of failing the whole packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetUser {
    /// The user's id, a UUID (anything else is answered with status 400).
    pub id: String,
}

impl Request for GetUser {
    type Response = User;
    const PATTERN: &'static str = r#"{"cmd":"get_user"}"#;
}

/// A user's public profile, as `get_user` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// When the account was created, as JavaScript's `toISOString()` renders it.
    #[serde(with = "js_date")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

/// `user.created`: a new account exists. Published by auth-service through its outbox; the
/// event id travels in the AMQP `message_id` property, not in this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// When the account was created, as JavaScript's `toISOString()` renders it.
    #[serde(with = "js_date")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

impl Event for UserCreated {
    const PATTERN: &'static str = "user.created";

    /// The user: one account is created once, whatever the emits carry besides its id (and
    /// the ids derived before this hook existed stay the same).
    fn dedup_key(&self) -> Result<Uuid, serde_json::Error> {
        Ok(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"}"#;

    #[test]
    fn user_created_keeps_the_nestjs_shape_byte_for_byte() {
        let event: UserCreated = serde_json::from_str(EVENT).unwrap();
        assert_eq!(serde_json::to_string(&event).unwrap(), EVENT);
        let user: User = serde_json::from_str(EVENT).unwrap();
        assert_eq!(serde_json::to_string(&user).unwrap(), EVENT);
    }

    #[test]
    fn get_user_pattern_is_the_nestjs_object() {
        assert_eq!(GetUser::pattern(), serde_json::json!({"cmd": "get_user"}));
    }
}
