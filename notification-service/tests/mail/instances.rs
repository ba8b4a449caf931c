//! Two instances of the service on one queue: every event published twice still makes one mail.

use std::collections::BTreeSet;

use crate::support::{TestApp, event_id, user};

const USERS: usize = 12;

#[tokio::test]
async fn two_instances_given_each_event_twice_send_one_mail_per_user() {
    let mut t = TestApp::spawn().await;
    t.another_instance().await;

    let events: Vec<_> =
        (0..USERS).map(|n| (user(&format!("User {n}"), &format!("user{n}@example.com")), event_id())).collect();
    // Back to back, so that the two copies of an event are often handled at the same time by
    // the two instances (prefetch 4 each).
    for (event, id) in &events {
        t.emit(event, id).await;
        t.emit(event, id).await;
    }

    t.wait_handled("ok", 2 * USERS as u64).await;
    let mails = t.settled_mails().await;
    let recipients: BTreeSet<&str> = mails.iter().map(|mail| mail.rcpt_to[0].as_str()).collect();
    assert_eq!(recipients.len(), USERS, "every user got a mail");
    assert_eq!(mails.len(), USERS, "and only one");
    assert_eq!(t.recorded().await, USERS as i64);
    t.stop().await;
}
