//! The span of each message (README "Guarantees of the transport", tracing): the line logged
//! while a request is handled carries its queue, pattern, correlation id, message id, trace id
//! and attempt. Read from the built binary's JSON log (`LOG_FORMAT=json`, as compose runs it):
//! a `get_user` for an unknown id, published with ids of the test's own, is answered 404 and
//! logged ("request answered with an error") inside its span.

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use serde_json::json;
use tests::{BrokerProbe, DEADLINE, ServiceEnv};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_logged_in_a_span_with_its_queue_pattern_ids_trace_and_attempt() {
    let env = ServiceEnv::new().await;
    let binary = crate::binary::start(&env, &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let replies = tests::unique("span_replies");
    probe.declare_queue(&replies).await;

    let (correlation_id, message_id) = (format!("corr-{}", Uuid::new_v4()), format!("msg-{}", Uuid::new_v4()));
    let trace_id = Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &Uuid::new_v4().simple().to_string()[..16]);
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
    let properties = BasicProperties::default()
        .with_correlation_id(correlation_id.clone().into())
        .with_message_id(message_id.clone().into())
        .with_reply_to(replies.clone().into())
        .with_content_type("application/json".into())
        .with_headers(headers);
    let request = json!({"pattern": {"cmd": "get_user"}, "data": {"id": Uuid::new_v4()}, "id": correlation_id});
    assert!(probe.publish_raw("", env.user_queue(), request.to_string().as_bytes(), properties).await);

    let reply = probe.wait_for_message(&replies, DEADLINE).await;
    assert_eq!(reply.correlation_id.as_deref(), Some(correlation_id.as_str()));
    assert_eq!(reply.json()["err"]["status"], 404, "{:?}", reply.json());
    let lines = tests::eventually(DEADLINE, || async {
        let lines = tests::logs::lines_in_span(&binary.log_text(), "message", "correlation_id", &correlation_id);
        if lines.is_empty() { Err(binary.log_text()) } else { Ok(lines) }
    })
    .await;

    let (line, span) = lines
        .iter()
        .find(|(line, _)| line["message"] == "request answered with an error")
        .unwrap_or_else(|| panic!("no answer logged in the span: {lines:?}"));
    assert_eq!(span["queue"], env.user_queue(), "{line}");
    assert_eq!(span["pattern"], r#"{"cmd":"get_user"}"#, "{line}");
    assert_eq!(span["correlation_id"], correlation_id.as_str(), "{line}");
    assert_eq!(span["message_id"], message_id.as_str(), "{line}");
    assert_eq!(span["trace_id"], trace_id.as_str(), "the caller's trace continues: {line}");
    assert_eq!(span["attempt"], 1, "{line}");

    binary.process.signal("TERM").await.unwrap();
    assert!(binary.process.wait_exit(DEADLINE).await.is_some_and(|status| status.success()));
    probe.delete_queues(&[&replies]).await;
    env.finish().await;
}
