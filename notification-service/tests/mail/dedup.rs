//! Exactly one mail per event and per user, however often the event arrives.

use crate::support::{TestApp, event_id, user};

#[tokio::test]
async fn the_same_event_delivered_twice_sends_one_mail_while_another_user_still_gets_theirs() {
    let mut t = TestApp::spawn().await;
    let ada = user("Ada", "ada@example.com");
    let ada_event = event_id();

    // Published back to back, the two copies may well be handled concurrently (prefetch 4):
    // the second then waits on the first one's claim instead of racing it.
    t.emit(&ada, &ada_event).await;
    t.emit(&ada, &ada_event).await;
    t.emit(&user("Grace", "grace@example.com"), &event_id()).await;

    // All three consumed and acked: the duplicate was seen, not merely not yet delivered.
    t.wait_handled("ok", 3).await;
    let mails = t.settled_mails().await;
    let mut recipients: Vec<&str> = mails.iter().map(|mail| mail.rcpt_to[0].as_str()).collect();
    recipients.sort_unstable();
    assert_eq!(recipients, ["ada@example.com", "grace@example.com"]);
    assert_eq!(t.recorded().await, 2);
    t.stop().await;
}

#[tokio::test]
async fn a_second_event_about_the_same_user_sends_nothing() {
    let mut t = TestApp::spawn().await;
    let ada = user("Ada", "ada@example.com");
    let first = event_id();

    t.emit(&ada, &first).await;
    t.wait_handled("ok", 1).await;
    t.emit(&ada, &event_id()).await;
    t.wait_handled("ok", 2).await;

    let mails = t.settled_mails().await;
    assert_eq!(mails.len(), 1, "one welcome per user");
    assert_eq!(mails[0].message_id(), Some(format!("{first}@notification-service")));
    assert_eq!(t.recorded().await, 1);
    t.stop().await;
}
