//! The mail itself: who it goes to, from whom, its subject, both parts and its Message-ID.

use notification_service::sent_mails;

use tests::DEADLINE;

use crate::support::{TestApp, event_id, user};

#[tokio::test]
async fn a_user_created_event_sends_one_welcome_mail_with_both_parts_and_a_derived_message_id() {
    let t = TestApp::spawn().await;
    let id = event_id();

    t.emit(&user("Ada", "ada@example.com"), &id).await;

    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    let mail = &mails[0];
    assert_eq!(mail.rcpt_to, ["ada@example.com"]);
    assert_eq!(mail.mail_from, "welcome@example.com");
    assert_eq!(mail.header("From").as_deref(), Some("Welcome <welcome@example.com>"));
    assert_eq!(mail.header("To").as_deref(), Some("Ada <ada@example.com>"));
    assert_eq!(mail.subject().as_deref(), Some("Welcome, Ada!"));
    assert_eq!(mail.message_id(), Some(format!("{id}@notification-service")));
    let text = mail.text_body().expect("a text/plain part");
    assert!(text.contains("Hi Ada,"), "{text}");
    let html = mail.html_body().expect("a text/html part");
    assert!(html.contains("<p>Hi Ada,</p>"), "{html}");

    t.wait_handled("ok", 1).await;
    assert!(sent_mails::is_sent(&t.pool, &id).await.unwrap(), "the mail is recorded under its event id");
    t.stop().await;
}

#[tokio::test]
async fn the_message_id_domain_and_sender_are_configurable() {
    let sink = tests::smtp::SmtpSink::start().await;
    let url = sink.url();
    let extra = [("MESSAGE_ID_DOMAIN", "mail.example.org"), ("MAIL_FROM", "Team <hello@example.org>")];
    let t = TestApp::spawn_with(sink, &url, &extra).await;
    let id = event_id();

    t.emit(&user("Grace", "grace@example.com"), &id).await;

    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails[0].message_id(), Some(format!("{id}@mail.example.org")));
    assert_eq!(mails[0].mail_from, "hello@example.org");
    assert_eq!(mails[0].subject().as_deref(), Some("Welcome, Grace!"));
    t.wait_handled("ok", 1).await;
    t.stop().await;
}
