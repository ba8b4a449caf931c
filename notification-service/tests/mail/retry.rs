//! Transient SMTP failures (server down, 4xx, a connection cut under the pool) are retried
//! through the delay queues until the mail goes out, exactly once.

use tests::{ChaosProxy, DEADLINE, smtp::SmtpMode, smtp::SmtpSink};

use crate::support::{TestApp, event_id, user};

#[tokio::test]
async fn an_smtp_outage_is_ridden_out_and_ends_in_exactly_one_mail() {
    let mut t = TestApp::spawn().await;
    t.sink.stop().await;

    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    // Connection refused, twice at least: the event is cycling through the delay queues.
    t.wait_handled("retried", 2).await;
    assert_eq!(t.recorded().await, 0, "nothing is recorded while the mail was not accepted");
    t.sink.restart().await;

    t.sink.wait_for_mails(1, DEADLINE).await;
    t.wait_handled("ok", 1).await;
    assert_eq!(t.settled_mails().await.len(), 1);
    assert_eq!(t.recorded().await, 1);
    t.probe.assert_empty(&t.queue).await;
    t.stop().await;
}

#[tokio::test]
async fn an_smtp_4xx_is_retried_until_the_server_accepts() {
    let mut t = TestApp::spawn().await;
    t.sink.set_mode(SmtpMode::TempFail).await;

    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    t.wait_handled("retried", 1).await;
    t.sink.set_mode(SmtpMode::Accept).await;

    t.wait_handled("ok", 1).await;
    assert_eq!(t.settled_mails().await.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_pooled_smtp_connection_cut_by_the_network_is_replaced() {
    let sink = SmtpSink::start().await;
    let proxy = ChaosProxy::in_front_of(&sink.url()).await;
    let url = proxy.url_for(&sink.url());
    let mut t = TestApp::spawn_with(sink, &url, &[]).await;
    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    t.wait_handled("ok", 1).await;

    // The pool now holds a connection that the cut kills; new ones are refused meanwhile.
    proxy.cut().await;
    t.emit(&user("Grace", "grace@example.com"), &event_id()).await;
    t.wait_handled("retried", 1).await;
    proxy.restore();

    t.wait_handled("ok", 2).await;
    assert_eq!(t.settled_mails().await.len(), 2);
    t.stop().await;
}
