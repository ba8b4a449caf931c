//! The span of each message (README "Guarantees of the transport", tracing): every line logged
//! while a message is handled carries its queue, pattern, message id, trace id and attempt.
//! Read from the built binary's JSON log (`LOG_FORMAT=json`, as compose runs it): an event
//! whose mail the SMTP server refuses for now (4xx) is tried twice, then parked; the line of
//! each attempt carries that attempt's number and the event's ids.

use lapin::{BasicProperties, types::AMQPValue, types::FieldTable};
use serde_json::{Value, json};
use tests::{
    BrokerProbe, DEADLINE, ServiceEnv,
    smtp::{SmtpMode, SmtpSink},
};

use crate::support::{event_id, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_at_an_event_logs_in_a_span_with_its_queue_pattern_ids_and_attempt() {
    let env = ServiceEnv::new().await.set("RETRY_MAX_ATTEMPTS", "2");
    let mut sink = SmtpSink::start().await;
    let binary = crate::binary::start(&env, &sink.url(), &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    sink.set_mode(SmtpMode::TempFail).await;

    let id = event_id();
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let packet = json!({"pattern": "user.created", "data": user("Ada", "ada@example.com")});
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
    let properties = BasicProperties::default()
        .with_message_id(id.clone().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let routed =
        probe.publish_raw(env.events_exchange(), "user.created", packet.to_string().as_bytes(), properties).await;
    assert!(routed, "the event reached the service's queue");

    // Tried, refused (451), retried, refused, parked.
    let dlq = shared::topology::dlq_name(env.notification_queue());
    let parked = probe.wait_for_message(&dlq, DEADLINE).await;
    assert_eq!(parked.message_id.as_deref(), Some(id.as_str()));
    let lines = tests::eventually(DEADLINE, || async {
        let lines = tests::logs::lines_in_span(&binary.log_text(), "message", "message_id", &id);
        let attempts: Vec<&Value> = lines.iter().map(|(_, span)| &span["attempt"]).collect();
        if attempts.contains(&&json!(1)) && attempts.contains(&&json!(2)) { Ok(lines) } else { Err(binary.log_text()) }
    })
    .await;

    for (line, span) in &lines {
        assert_eq!(span["queue"], env.notification_queue(), "{line}");
        assert_eq!(span["pattern"], "user.created", "{line}");
        assert_eq!(span["message_id"], id.as_str(), "{line}");
        assert_eq!(span["trace_id"], trace_id.as_str(), "the sender's trace continues: {line}");
    }
    // The transport's own lines: the retry of attempt 1, the parking at attempt 2.
    let said = |attempt: u32, words: &str| {
        lines.iter().any(|(line, span)| {
            span["attempt"] == attempt && line["message"].as_str().is_some_and(|text| text.contains(words))
        })
    };
    assert!(said(1, "retrying"), "{lines:?}");
    assert!(said(2, "parking"), "{lines:?}");

    binary.process.signal("TERM").await.unwrap();
    assert!(binary.process.wait_exit(DEADLINE).await.is_some_and(|status| status.success()));
    env.finish().await;
}
