//! `mq dlq` on a real parked `user.created`: notification-service (in-process, the same
//! `App::build` as its binary) cannot reach SMTP, retries run out and it parks the event; SMTP
//! comes back, the real `mq` binary lists, shows and replays it, and exactly one welcome mail
//! goes out.

use notification_service::{App, Config};
use serde_json::json;
use shared::{CancellationToken, topology};
use tests::{BrokerProbe, DEADLINE, ServiceEnv, smtp::SmtpSink};

use crate::support::{handled, mq};

const ADA: &str = r#"{"id":"7b0f3a52-64c7-4a57-9d3e-6f0c2b9e4d11","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"}"#;
const BOB: &str = r#"{"id":"0c8e2f4b-1d3a-4e5f-8a9b-7c6d5e4f3a21","email":"bob@example.com","name":"Bob","createdAt":"2024-01-01T00:08:00.000Z"}"#;

async fn start(env: &ServiceEnv, shutdown: &CancellationToken) -> App {
    let config = Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
    let app = App::build(config, shutdown.clone()).await.expect("notification-service starts");
    assert!(app.wait_ready(DEADLINE).await, "notification-service did not start consuming");
    app
}

fn mails_to(sink: &SmtpSink, address: &str) -> usize {
    sink.mails().iter().filter(|mail| mail.rcpt_to.iter().any(|to| to.contains(address))).count()
}

#[tokio::test]
async fn a_parked_user_created_is_replayed_by_mq_and_mailed_exactly_once() {
    let mut sink = SmtpSink::start().await;
    // The kit's retries (3 attempts, 50 to 200 ms) park a failing event within a second;
    // one event at a time, so that a later event is a barrier for an earlier one.
    let env = ServiceEnv::new()
        .await
        .set("SMTP_URL", sink.url())
        .set("SMTP_TIMEOUT_MS", "2000")
        .set("CLAIM_LEASE_MS", "10000")
        .set("SHUTDOWN_GRACE_MS", "5000")
        .set("PREFETCH", "1");
    let queue = env.notification_queue().to_owned();
    let dlq = topology::dlq_name(&queue);
    let shutdown = CancellationToken::new();
    let app = start(&env, &shutdown).await;
    let probe = BrokerProbe::connect(env.amqp_url()).await;

    // SMTP down: every attempt is refused, the last one parks the event.
    sink.stop().await;
    let exchange = env.events_exchange().to_owned();
    let emitted = mq(&env, &["emit", "user.created", ADA, "--exchange", &exchange, "--message-id", "ada-1"]).await;
    assert_eq!(emitted.code, Some(0), "{emitted:?}");
    tests::eventually(DEADLINE, || async {
        let parked = probe.message_count(&dlq).await;
        if parked == 1 { Ok(()) } else { Err(format!("{parked} parked")) }
    })
    .await;

    let listed = mq(&env, &["--json", "dlq", "list", &queue]).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let listed = listed.json();
    assert_eq!(listed["count"], 1, "{listed}");
    let parked = &listed["messages"][0];
    assert_eq!(parked["pattern"], "user.created", "{listed}");
    assert_eq!(parked["failure"], "exhausted", "{listed}");
    assert_eq!(parked["attempts"], 3, "{listed}");
    assert_eq!(parked["service"], "notification-service", "{listed}");
    assert_eq!(parked["messageId"], "ada-1", "{listed}");
    assert!(parked["error"].as_str().is_some_and(|error| !error.is_empty()), "{listed}");
    assert!(parked["parkedAt"].as_str().is_some_and(|at| at.ends_with('Z')), "{listed}");
    assert_eq!(probe.message_count(&dlq).await, 1, "listing leaves the message parked");
    let shown = mq(&env, &["--json", "dlq", "show", &dlq, "1"]).await.json();
    assert_eq!(shown["message"]["body"]["data"]["email"], "ada@example.com", "{shown}");
    assert_eq!(shown["message"]["headers"]["x-original-routing-key"], "user.created", "{shown}");
    let text = mq(&env, &["dlq", "list", &dlq]).await;
    assert!(text.stdout.starts_with(&format!("{dlq}: 1 message\n")), "{text:?}");
    assert!(text.stdout.contains("user.created") && text.stdout.contains("exhausted"), "{text:?}");

    // SMTP back: the replay goes to the events exchange as first published, attempts reset.
    sink.restart().await;
    let replayed = mq(&env, &["--json", "dlq", "replay", &queue]).await;
    assert_eq!(replayed.code, Some(0), "{replayed:?}");
    let replayed = replayed.json();
    assert_eq!(replayed["replayed"][0]["exchange"], json!(exchange), "{replayed}");
    assert_eq!(replayed["replayed"][0]["routingKey"], "user.created", "{replayed}");
    assert_eq!(replayed["failed"], json!([]), "{replayed}");

    // The barrier: an event published after the replay, handled after it (one at a time).
    let barrier = mq(&env, &["emit", "user.created", BOB, "--exchange", &exchange, "--message-id", "bob-1"]).await;
    assert_eq!(barrier.code, Some(0), "{barrier:?}");
    tests::eventually(DEADLINE, || async {
        let ok = handled(&queue, "ok");
        if ok >= 2 && mails_to(&sink, "bob@example.com") == 1 { Ok(()) } else { Err(format!("{ok} handled")) }
    })
    .await;
    assert_eq!(mails_to(&sink, "ada@example.com"), 1, "exactly one welcome mail for the replayed event");
    assert_eq!(sink.mails().len(), 2);
    assert_eq!(probe.message_count(&dlq).await, 0, "nothing parked again");
    assert_eq!(handled(&queue, "parked"), 1);

    shutdown.cancel();
    app.run_until_stopped().await;
    env.finish().await;
}

#[tokio::test]
async fn replay_filters_by_pattern_and_purge_asks_for_yes() {
    let env = ServiceEnv::new().await;
    let queue = env.notification_queue().to_owned();
    let dlq = topology::dlq_name(&queue);
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    probe.declare_queue(&queue).await;
    probe.declare_queue(&dlq).await;
    // Two messages in the dead-letter queue, one of another pattern first.
    for (pattern, id) in [("other.event", "o-1"), ("user.created", "u-1")] {
        let emitted = mq(&env, &["emit", pattern, "{}", "--queue", &dlq, "--message-id", id]).await;
        assert_eq!(emitted.code, Some(0), "{emitted:?}");
    }
    let replayed = mq(&env, &["--json", "dlq", "replay", &dlq, "--pattern", "user.created", "--to-queue"]).await;
    assert_eq!(replayed.code, Some(0), "{replayed:?}");
    let replayed = replayed.json();
    assert_eq!(replayed["replayed"].as_array().map(Vec::len), Some(1), "{replayed}");
    assert_eq!(replayed["replayed"][0]["routingKey"], json!(queue), "{replayed}");
    let arrived = probe.wait_for_message(&queue, DEADLINE).await;
    assert!(String::from_utf8_lossy(&arrived.body).contains("user.created"), "{arrived:?}");
    assert!(arrived.headers.contains_key("x-replayed-at"), "{arrived:?}");
    assert_eq!(arrived.message_id.as_deref(), Some("u-1"));

    let refused = mq(&env, &["dlq", "purge", &dlq]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    assert_eq!(probe.message_count(&dlq).await, 1, "without --yes nothing is deleted");
    let purged = mq(&env, &["--json", "dlq", "purge", &dlq, "--yes"]).await;
    assert_eq!(purged.json()["purged"], 1, "{purged:?}");
    assert_eq!(probe.message_count(&dlq).await, 0);
    env.finish().await;
}
