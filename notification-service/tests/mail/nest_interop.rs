//! A stock NestJS 11 client emitting `user.created` straight to the queue (no `message_id`).

use notification_service::EventId;
use serde_json::json;
use tests::nest::{EmitTarget, nest_emit};

use crate::support::{TestApp, user};

#[tokio::test]
async fn a_nestjs_client_emitting_to_the_queue_gets_exactly_one_mail_with_a_derived_id() {
    let mut t = TestApp::spawn().await;
    let ada = user("Ada", "ada@example.com");
    let data = json!({"id": ada.id, "email": ada.email, "name": ada.name, "createdAt": "2024-01-01T00:07:00.000Z"});

    // NestJS sets no message_id: both emits get the same id derived from the user id.
    nest_emit(&t.amqp_url, EmitTarget::Queue(&t.queue), "user.created", data.clone()).await;
    nest_emit(&t.amqp_url, EmitTarget::Queue(&t.queue), "user.created", data).await;

    t.wait_handled("ok", 2).await;
    let mails = t.settled_mails().await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_to, ["ada@example.com"]);
    assert_eq!(mails[0].subject().as_deref(), Some("Welcome, Ada!"));
    let derived = EventId::derived(&ada).unwrap();
    assert_eq!(derived.as_str(), uuid::Uuid::new_v5(&ada.id, b"user.created").to_string());
    assert_eq!(mails[0].message_id(), Some(format!("{derived}@notification-service")));
    t.stop().await;
}
