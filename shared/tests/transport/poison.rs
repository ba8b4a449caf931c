//! Poison requests: a caller waiting on a request that cannot be served is answered at once,
//! and the request is parked in `<queue>.dlq` with the reason.

use serde_json::json;
use shared::{RpcError, SendOptions, retry};

use crate::{DEADLINE, Echo, Fixture};

#[tokio::test]
async fn a_waiting_caller_gets_an_error_reply_for_an_undecodable_request() {
    let fixture = Fixture::start().await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    // The caller's reply queue (a NestJS caller's, or any client's): it waits for an answer.
    let caller = tests::unique("caller");
    probe.declare_queue(&caller).await;
    for (n, body) in [&b"\xff not json"[..], br#"{"data":{"n":1},"id":"no-pattern"}"#].into_iter().enumerate() {
        let correlation_id = format!("call-{n}");
        let properties = lapin::BasicProperties::default()
            .with_reply_to(caller.as_str().into())
            .with_correlation_id(correlation_id.as_str().into());
        probe.publish_raw("", &fixture.queue, body, properties).await;

        let reply = probe.wait_for_message(&caller, DEADLINE).await;
        assert_eq!(reply.correlation_id.as_deref(), Some(correlation_id.as_str()));
        let reply = reply.json();
        assert_eq!(reply["isDisposed"], json!(true), "{reply}");
        assert_eq!(reply["err"]["status"], json!(400), "{reply}");
        let message = reply["err"]["message"].as_str().unwrap();
        assert!(message.starts_with("undecodable message: "), "{message}");

        let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
        assert_eq!(parked.body, body);
        assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("undecodable")));
    }
    let reply = fixture.client.send(&Echo { text: "still serving".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(reply.text, "still serving");
    probe.delete_queues(&[&caller]).await;
}

#[tokio::test]
async fn a_request_nobody_handles_is_answered_and_parked() {
    let fixture = Fixture::start().await;
    let error = fixture.client.send_raw(&json!({"cmd": "nobody"}), &json!({"n": 1}), SendOptions::default()).await;
    assert!(matches!(error, Err(RpcError::NoHandler { .. })), "{error:?}");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.json()["pattern"], json!({"cmd": "nobody"}));
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("no-handler")));
    assert_eq!(parked.header(retry::SERVICE_HEADER), Some(&json!("transport-test")));
    assert!(parked.header(retry::ERROR_HEADER).is_some());
}
