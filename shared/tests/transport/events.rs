//! Events: confirmed emits, ack after success, retries through delay queues, the DLQ.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::json;
use shared::{EmitError, EmitOptions, EmitTarget, RpcError, retry};

use crate::{Broken, DEADLINE, Echo, Fixture, Ping};

async fn pings(fixture: &Fixture, count: usize) -> Vec<(Ping, shared::MessageContext)> {
    tests::eventually(DEADLINE, || async {
        let pings = fixture.recorder.pings.lock().unwrap().clone();
        if pings.len() >= count { Ok(pings) } else { Err(format!("{} of {count} pings so far", pings.len())) }
    })
    .await
}

#[tokio::test]
async fn an_emitted_event_reaches_its_handler_with_id_and_trace() {
    let fixture = Fixture::start().await;
    let trace = shared::TraceContext::new_root();
    let options = EmitOptions { message_id: Some("event-1".into()), trace: Some(trace), ..EmitOptions::default() };
    fixture.client.emit_with(&Ping { n: 1 }, options).await.unwrap();
    let (event, ctx) = pings(&fixture, 1).await.remove(0);
    assert_eq!(event, Ping { n: 1 });
    assert_eq!(ctx.message_id.as_deref(), Some("event-1"));
    assert_eq!(ctx.trace.trace_id(), trace.trace_id());
    assert_eq!(ctx.attempt, 1);
}

#[tokio::test]
async fn emitted_events_are_persistent_nestjs_packets() {
    let fixture = Fixture::start().await;
    let observer = tests::unique("observer");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.declare_queue(&observer).await;
    probe.bind(&observer, &fixture.exchange, "test.ping").await;
    fixture.client.emit(&Ping { n: 7 }).await.unwrap();
    let message = probe.wait_for_message(&observer, DEADLINE).await;
    assert_eq!(message.body, br#"{"pattern":"test.ping","data":{"n":7}}"#);
    assert_eq!(message.routing_key, "test.ping");
    assert_eq!(message.delivery_mode, Some(2));
    assert!(message.message_id.is_some());
    assert!(message.correlation_id.is_none() && message.reply_to.is_none());

    // A contract's fields go out in their declared order, as a NestJS peer writes them.
    probe.bind(&observer, &fixture.exchange, "user.created").await;
    let user = shared::contracts::UserCreated {
        id: "4fb7e234-2daa-5fed-bdf6-93f8f482da80".parse().unwrap(),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: "2024-01-01T00:07:00Z".parse().unwrap(),
    };
    fixture.client.emit(&user).await.unwrap();
    let message = probe.wait_for_message(&observer, DEADLINE).await;
    assert_eq!(
        String::from_utf8(message.body).unwrap(),
        r#"{"pattern":"user.created","data":{"id":"4fb7e234-2daa-5fed-bdf6-93f8f482da80","email":"ada@example.com","name":"Ada","createdAt":"2024-01-01T00:07:00.000Z"}}"#
    );
    probe.delete_queues(&[&observer]).await;
}

#[tokio::test]
async fn emitting_to_a_missing_queue_is_an_error_not_a_silent_drop() {
    let fixture = Fixture::start().await;
    let options = EmitOptions { target: Some(EmitTarget::Queue(tests::unique("missing"))), ..EmitOptions::default() };
    let error = fixture.client.emit_with(&Ping { n: 1 }, options).await.unwrap_err();
    assert!(matches!(error, EmitError::Unroutable { .. }), "{error:?}");
}

#[tokio::test]
async fn an_event_is_acked_only_after_its_handler_finished() {
    let mut fixture = Fixture::start_with(|mut config| {
        config.shutdown_grace = Duration::from_millis(100);
        config
    })
    .await;
    fixture.recorder.hold_pings.store(true, Ordering::SeqCst);
    let started = fixture.recorder.started.notified();
    fixture.client.emit(&Ping { n: 1 }).await.unwrap();
    tokio::time::timeout(DEADLINE, started).await.expect("the handler never started");
    // The handler is running and will not finish: stopping the server must hand the message back.
    fixture.stop_server().await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    tests::eventually(DEADLINE, || async {
        match probe.message_count(&fixture.queue).await {
            1 => Ok(()),
            n => Err(format!("{n} messages in the queue")),
        }
    })
    .await;
    assert!(fixture.recorder.pings.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_handler_that_fails_once_is_retried_and_succeeds() {
    let fixture = Fixture::start().await;
    fixture.recorder.failures_left.store(1, Ordering::SeqCst);
    fixture.client.emit(&Ping { n: 2 }).await.unwrap();
    let (event, ctx) = pings(&fixture, 1).await.remove(0);
    assert_eq!(event, Ping { n: 2 });
    assert_eq!(ctx.attempt, 2, "the second attempt succeeded");
    tests::BrokerProbe::connect(&fixture.amqp_url).await.assert_empty(&fixture.dlq()).await;
}

#[tokio::test]
async fn a_handler_that_always_fails_parks_the_event_with_its_story() {
    let fixture = Fixture::start().await;
    fixture.client.emit(&Broken { permanent: false }).await.unwrap();
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.json(), json!({"pattern": "test.broken", "data": {"permanent": false}}));
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("exhausted")));
    assert_eq!(parked.header(retry::ATTEMPTS_HEADER), Some(&json!(3)), "max_attempts is 3");
    assert_eq!(parked.header(retry::SERVICE_HEADER), Some(&json!("transport-test")));
    assert_eq!(parked.header(retry::ORIGINAL_EXCHANGE_HEADER), Some(&json!(fixture.exchange)));
    assert_eq!(parked.header(retry::ORIGINAL_ROUTING_KEY_HEADER), Some(&json!("test.broken")));
    let reason = parked.header(retry::ERROR_HEADER).and_then(|v| v.as_str()).unwrap();
    assert!(reason.contains("told to fail"), "{reason}");
    assert_eq!(parked.delivery_mode, Some(2));
    assert!(parked.header("traceparent").is_some());
    probe.assert_empty(&fixture.queue).await;
}

#[tokio::test]
async fn a_permanent_failure_is_parked_without_retrying() {
    let fixture = Fixture::start().await;
    fixture.client.emit(&Broken { permanent: true }).await.unwrap();
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("permanent")));
    assert_eq!(parked.header(retry::ATTEMPTS_HEADER), Some(&json!(1)));
}

#[tokio::test]
async fn poison_messages_are_parked_while_the_consumer_keeps_serving() {
    let fixture = Fixture::start().await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    for (body, failure) in [
        (&b"\xff not json"[..], "undecodable"),
        (br#"{"data":{"n":1}}"#, "undecodable"),
        (br#"{"pattern":"nobody.handles","data":{}}"#, "no-handler"),
        (br#"{"pattern":"test.ping","data":{"n":"not a number"}}"#, "permanent"),
    ] {
        probe.publish_raw("", &fixture.queue, body, lapin::BasicProperties::default()).await;
        let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
        assert_eq!(parked.body, body);
        assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!(failure)));
    }
    let reply = fixture.client.send(&Echo { text: "still here".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(reply.text, "still here");
}

#[tokio::test]
async fn an_undecodable_request_is_answered_and_parked() {
    let fixture = Fixture::start().await;
    let error = fixture
        .client
        .send_raw(&json!({"cmd": "echo"}), &json!(null), shared::SendOptions::default())
        .await
        .unwrap_err();
    // `data: null` is not an `Echo`: the caller is answered 400 at once...
    let RpcError::Remote { error, .. } = &error else { panic!("expected a 400 error object, got {error:?}") };
    assert_eq!(error.status(), Some(400), "{error:?}");
    assert!(error.message().unwrap_or_default().starts_with(r#"invalid payload for {"cmd":"echo"}: "#), "{error:?}");
    // ...and the request is parked with the reason, as a poison message.
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.json()["pattern"], json!({"cmd": "echo"}));
    assert_eq!(parked.json()["data"], json!(null));
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("permanent")));
    assert_eq!(parked.header(retry::ATTEMPTS_HEADER), Some(&json!(1)));
    let reason = parked.header(retry::ERROR_HEADER).and_then(|v| v.as_str()).unwrap();
    assert!(reason.starts_with("the payload does not match its contract: "), "{reason}");
    // A handler's own 400 is an answer, not a poison message: nothing more is parked.
    let refused = fixture.client.send(&crate::Fail { status: Some(400) }).await.unwrap_err();
    assert!(matches!(&refused, RpcError::Remote { error, .. } if error.status() == Some(400)), "{refused:?}");
    probe.assert_empty(&fixture.dlq()).await;
    probe.assert_empty(&fixture.queue).await;
}

#[tokio::test]
async fn emit_raw_publishes_stored_json_byte_for_byte_and_is_confirmed() {
    let fixture = Fixture::start().await;
    let observer = tests::unique("observer");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.declare_queue(&observer).await;
    probe.bind(&observer, &fixture.exchange, "test.ping").await;
    // Stored JSON text (an outbox row's payload): its spacing and key order are kept.
    let stored = serde_json::value::RawValue::from_string(r#"{ "n" : 3 }"#.to_owned()).unwrap();
    let options = EmitOptions { message_id: Some("raw-1".into()), ..EmitOptions::default() };
    fixture.client.emit_raw(&json!("test.ping"), &stored, options).await.unwrap();
    let message = probe.wait_for_message(&observer, DEADLINE).await;
    assert_eq!(message.body, br#"{"pattern":"test.ping","data":{ "n" : 3 }}"#);
    assert_eq!(message.message_id.as_deref(), Some("raw-1"));
    assert_eq!(message.delivery_mode, Some(2));
    // The handler gets it like any other event.
    let (event, _) = pings(&fixture, 1).await.remove(0);
    assert_eq!(event, Ping { n: 3 });
    // And an unroutable target is reported, not dropped.
    let missing = EmitOptions { target: Some(EmitTarget::Queue(tests::unique("missing"))), ..EmitOptions::default() };
    let error = fixture.client.emit_raw(&json!("test.ping"), &stored, missing).await.unwrap_err();
    assert!(matches!(error, EmitError::Unroutable { .. }), "{error:?}");
    probe.delete_queues(&[&observer]).await;
}

#[tokio::test]
async fn an_event_pattern_written_with_json_escapes_routes_like_its_text() {
    let fixture = Fixture::start().await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    // `test.p\u0069ng` is the JSON text of "test.ping".
    let body = br#"{"pattern":"test.p\u0069ng","data":{"n":4}}"#;
    probe.publish_raw("", &fixture.queue, body, lapin::BasicProperties::default()).await;
    let (event, ctx) = pings(&fixture, 1).await.remove(0);
    assert_eq!(event, Ping { n: 4 });
    assert_eq!(ctx.pattern, "test.ping");
    probe.assert_empty(&fixture.dlq()).await;
}
