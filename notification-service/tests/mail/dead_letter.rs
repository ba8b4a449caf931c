//! Failures retrying cannot fix go to `<queue>.dlq` at once, with the reason in headers, and
//! the consumer keeps serving.

use lapin::BasicProperties;
use notification_service::sent_mails;
use serde_json::json;
use tests::{DEADLINE, ProbedMessage, smtp::SmtpMode};

use crate::support::{TestApp, event_id, transport_count, user};

fn header<'a>(message: &'a ProbedMessage, name: &str) -> &'a serde_json::Value {
    message.header(name).unwrap_or_else(|| panic!("no {name} header in {:?}", message.headers))
}

#[tokio::test]
async fn an_smtp_5xx_parks_the_event_in_the_dlq_with_its_reason() {
    let mut t = TestApp::spawn().await;
    t.sink.set_mode(SmtpMode::PermFail).await;
    let id = event_id();

    t.emit(&user("Ada", "ada@example.com"), &id).await;

    let parked = t.probe.wait_for_message(&t.dlq, DEADLINE).await;
    assert_eq!(header(&parked, "x-failure"), "permanent");
    let error = header(&parked, "x-error").as_str().unwrap();
    assert!(error.contains("550") && error.contains("rejected"), "{error}");
    assert_eq!(header(&parked, "x-attempts"), 1);
    assert_eq!(header(&parked, "x-service"), "notification-service");
    assert_eq!(parked.message_id.as_deref(), Some(id.as_str()), "parked as it came, to be replayed later");
    assert_eq!(t.handled("retried"), 0, "a 5xx is not retried");
    assert!(!sent_mails::is_sent(&t.pool, &id).await.unwrap());
    // Released, not left `sending`: a replay (on any instance) claims it afresh at once.
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM sent_mails WHERE event_id = $1")
        .bind(&id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(claims, 0, "the claim of a mail the SMTP server rejected is released");

    // The consumer keeps serving.
    t.sink.set_mode(SmtpMode::Accept).await;
    t.emit(&user("Grace", "grace@example.com"), &event_id()).await;
    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails[0].rcpt_to, ["grace@example.com"]);
    t.stop().await;
}

#[tokio::test]
async fn an_address_lettre_rejects_is_parked_without_leaking_it() {
    let mut t = TestApp::spawn().await;

    t.emit(&user("Ada", "ada at example dot com"), &event_id()).await;

    let parked = t.probe.wait_for_message(&t.dlq, DEADLINE).await;
    assert_eq!(header(&parked, "x-failure"), "permanent");
    let error = header(&parked, "x-error").as_str().unwrap();
    assert!(error.contains("not a valid mail address"), "{error}");
    assert!(!error.contains("example"), "the address stays out of the reason: {error}");
    assert_eq!(header(&parked, "x-attempts"), 1);
    assert!(t.settled_mails().await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn poison_messages_are_parked_and_the_consumer_keeps_serving() {
    let t = TestApp::spawn().await;

    let routed = t.probe.publish_raw("", &t.queue, b"this is not JSON {", BasicProperties::default()).await;
    assert!(routed);
    let not_json = t.probe.wait_for_message(&t.dlq, DEADLINE).await;
    assert_eq!(header(&not_json, "x-failure"), "undecodable");
    assert_eq!(not_json.body, b"this is not JSON {");

    // JSON and a packet, but not a UserCreated: the contract is broken, parked at once too.
    let wrong_shape = json!({"pattern": "user.created", "data": {"id": "not a uuid"}}).to_string();
    t.probe.publish_raw("", &t.queue, wrong_shape.as_bytes(), BasicProperties::default()).await;
    let invalid = t.probe.wait_for_message(&t.dlq, DEADLINE).await;
    assert_eq!(header(&invalid, "x-failure"), "permanent");
    assert_eq!(header(&invalid, "x-service"), "notification-service");
    assert_eq!(transport_count(&t.queue, "undecodable", "parked"), 1);

    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails[0].rcpt_to, ["ada@example.com"]);
    t.stop().await;
}
