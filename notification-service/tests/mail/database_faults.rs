//! Postgres going away around a send: before the claim nothing is sent (retried later); after
//! the SMTP server's 250 the record is retried in place, the delivery unacked, and the mail is
//! never sent again.

use std::time::Duration;

use notification_service::sent_mails;
use tests::{ChaosProxy, DEADLINE, smtp::SmtpSink};

use crate::support::{TestApp, event_id, metric, user};

/// A service whose database link runs through a chaos proxy, with SMTP commands allowed 5 s.
async fn behind_a_proxy(sink: SmtpSink) -> (TestApp, ChaosProxy) {
    let env = TestApp::env(&sink.url()).await;
    let proxy = ChaosProxy::in_front_of(&env.db().url).await;
    let database_url = proxy.url_for(&env.db().url);
    let env = env.set("DATABASE_URL", database_url).set("SMTP_TIMEOUT_MS", "5000");
    (TestApp::start(env, sink).await, proxy)
}

#[tokio::test]
async fn a_database_cut_between_the_claim_and_the_record_still_ends_in_exactly_one_mail() {
    let mut sink = SmtpSink::start().await;
    // The sink keeps the message, then waits before its 250: the window to cut the database in.
    sink.set_accept_delay(Duration::from_secs(2));
    let (mut t, proxy) = behind_a_proxy(sink).await;
    let id = event_id();
    let failures_before = metric("welcome_mail_record_failures_total", &[]);

    t.emit(&user("Ada", "ada@example.com"), &id).await;
    // The claim is committed and the message is at the SMTP server, its 250 not yet sent.
    t.sink.wait_for_mails(1, DEADLINE).await;
    proxy.cut().await;

    // The 250 arrives; recording fails, again and again, and nothing is sent twice meanwhile.
    tests::eventually(DEADLINE, || async {
        let failures = metric("welcome_mail_record_failures_total", &[]) - failures_before;
        if failures >= 2 { Ok(()) } else { Err(format!("{failures} failed records so far")) }
    })
    .await;
    assert_eq!(t.handled("ok"), 0, "the delivery stays unacked while the record is pending");
    assert_eq!(t.handled("retried"), 0, "a failed record is not a retry of the send");
    assert_eq!(t.sink.mails().len(), 1);

    proxy.restore();
    t.wait_handled("ok", 1).await;
    assert_eq!(t.settled_mails().await.len(), 1, "exactly one mail");
    assert!(sent_mails::is_sent(&t.pool, &id).await.unwrap(), "recorded once the database is back");
    assert_eq!(t.handled("retried"), 0);
    t.probe.assert_empty(&t.queue).await;
    t.stop().await;
}

#[tokio::test]
async fn a_database_down_before_the_claim_sends_nothing_until_it_is_back() {
    let (mut t, proxy) = behind_a_proxy(SmtpSink::start().await).await;
    proxy.cut().await;

    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    t.wait_handled("retried", 2).await;
    assert!(t.sink.mails().is_empty(), "no claim, no mail");
    proxy.restore();

    t.wait_handled("ok", 1).await;
    assert_eq!(t.settled_mails().await.len(), 1);
    assert_eq!(t.recorded().await, 1);
    t.stop().await;
}
