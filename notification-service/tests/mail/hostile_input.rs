//! Names, addresses and event ids come from outside: none of them can shape the mail's
//! headers or inject markup.

use shared::{EmitOptions, contracts::UserCreated};

use tests::DEADLINE;

use crate::support::{TestApp, event_id, user};

#[tokio::test]
async fn a_header_injection_in_the_name_yields_a_safe_mail_to_the_user_only() {
    let mut t = TestApp::spawn().await;

    t.emit(&user("Ada\r\nBcc: evil@example.com", "ada@example.com"), &event_id()).await;

    t.wait_handled("ok", 1).await;
    let mails = t.settled_mails().await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.rcpt_to, ["ada@example.com"], "no injected recipient");
    assert_eq!(mail.header("Bcc"), None);
    let (head, _body) = mail.raw.split_once("\r\n\r\n").expect("headers, then a body");
    assert!(!head.lines().any(|line| line.to_ascii_lowercase().starts_with("bcc")), "no injected header line:\n{head}");
    assert_eq!(mail.subject().as_deref(), Some("Welcome, Ada Bcc: evil@example.com!"));
    // The name travels as one encoded word: a display name, not an address list.
    let to = head.lines().find(|line| line.starts_with("To: ")).expect("a To header");
    assert!(to.starts_with("To: =?utf-8?") && to.ends_with("?= <ada@example.com>"), "{to}");
    assert_eq!(mail.header("To").as_deref(), Some("Ada Bcc: evil@example.com <ada@example.com>"));
    t.stop().await;
}

#[tokio::test]
async fn markup_in_the_name_is_escaped_in_the_html_part() {
    let t = TestApp::spawn().await;
    let name = r#"<script>alert("x")</script>"#;

    t.emit(&user(name, "ada@example.com"), &event_id()).await;

    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    let html = mails[0].html_body().unwrap();
    assert!(html.contains("Hi &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;,"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    let text = mails[0].text_body().unwrap();
    assert!(text.contains(&format!("Hi {name},")), "plain text is not interpreted, so it is verbatim: {text}");
    t.wait_handled("ok", 1).await;
    t.stop().await;
}

#[tokio::test]
async fn an_unsafe_event_id_cannot_shape_the_message_id_but_still_deduplicates() {
    let mut t = TestApp::spawn().await;
    let ada: UserCreated = user("Ada", "ada@example.com");
    let hostile = "x> <y@evil.example";
    let options = EmitOptions { message_id: Some(hostile.to_owned()), ..EmitOptions::default() };

    t.client.emit_with(&ada, options.clone()).await.unwrap();
    t.client.emit_with(&ada, options).await.unwrap();

    t.wait_handled("ok", 2).await;
    let mails = t.settled_mails().await;
    assert_eq!(mails.len(), 1);
    let message_id = mails[0].message_id().unwrap();
    let (left, domain) = message_id.split_once('@').unwrap();
    assert_eq!(domain, "notification-service");
    assert!(uuid::Uuid::parse_str(left).is_ok(), "an unsafe id is replaced by a UUID: {message_id}");
    t.stop().await;
}
