//! Two instances competing for events published once each: every event is taken by exactly
//! one of them and makes exactly one mail, and both instances take a share.

use std::collections::BTreeSet;

use crate::support::{TestApp, event_id, user};

const USERS: usize = 16;

#[tokio::test]
async fn two_instances_competing_for_each_event_send_it_once_and_share_the_work() {
    let mut t = TestApp::spawn().await;
    t.another_instance().await;
    let before = t.handled("ok");

    for n in 0..USERS {
        t.emit(&user(&format!("User {n}"), &format!("competing{n}@example.com")), &event_id()).await;
    }

    t.wait_handled("ok", before + USERS as u64).await;
    let mails = t.settled_mails().await;
    let recipients: BTreeSet<&str> = mails.iter().map(|mail| mail.rcpt_to[0].as_str()).collect();
    assert_eq!(recipients.len(), USERS, "every user got a mail");
    assert_eq!(mails.len(), USERS, "and only one");
    assert_eq!(t.recorded().await, USERS as i64);
    // Each claim names the instance that sent it: both instances took events.
    let owners: i64 = sqlx::query_scalar("SELECT count(DISTINCT owner) FROM sent_mails")
        .fetch_one(&t.pool)
        .await
        .expect("count the owners");
    assert_eq!(owners, 2, "one instance took every event");
    t.stop().await;
}
