//! Request/response over direct reply-to.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use shared::{RpcError, SendOptions, TraceContext, wire::INTERNAL_ERROR_MESSAGE};

use crate::{Echo, Fail, Fixture};

#[tokio::test]
async fn round_trip_returns_the_typed_reply() {
    let fixture = Fixture::start().await;
    let reply = fixture.client.send(&Echo { text: "hello".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(reply.text, "hello");
}

#[tokio::test]
async fn a_thousand_concurrent_sends_each_get_their_own_reply() {
    let fixture = Fixture::start().await;
    let calls = (0..1000).map(|n| {
        let client = fixture.client.clone();
        async move { (n, client.send(&Echo { text: format!("call-{n}"), delay_ms: 0 }).await) }
    });
    for (n, reply) in join_all(calls).await {
        assert_eq!(reply.unwrap().text, format!("call-{n}"));
    }
}

#[tokio::test]
async fn a_timeout_is_reported_and_the_next_call_is_healthy() {
    let fixture = Fixture::start().await;
    let slow = SendOptions { timeout: Some(Duration::from_millis(200)), ..SendOptions::default() };
    let error = fixture.client.send_with(&Echo { text: "slow".into(), delay_ms: 1000 }, slow).await.unwrap_err();
    assert!(matches!(error, RpcError::Timeout { .. }), "{error:?}");
    // The late reply to the first call arrives while this one waits and must not be taken for it.
    let reply = fixture.client.send(&Echo { text: "after".into(), delay_ms: 1200 }).await.unwrap();
    assert_eq!(reply.text, "after");
}

#[tokio::test]
async fn remote_error_objects_reach_the_caller_unchanged() {
    let fixture = Fixture::start().await;
    match fixture.client.send(&Fail { status: Some(404) }).await.unwrap_err() {
        RpcError::Remote { error, .. } => {
            assert_eq!(error.0, json!({"status": 404, "message": "told to fail"}));
            assert_eq!(error.status(), Some(404));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn other_handler_errors_become_the_nestjs_internal_error() {
    let fixture = Fixture::start().await;
    match fixture.client.send(&Fail { status: None }).await.unwrap_err() {
        RpcError::Remote { error, .. } => {
            assert_eq!(error.0, json!({"status": "error", "message": INTERNAL_ERROR_MESSAGE}));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_pattern_gets_the_no_handler_reply() {
    let fixture = Fixture::start().await;
    let error = fixture.client.send_raw(&json!({"cmd": "nope"}), &json!({}), SendOptions::default()).await.unwrap_err();
    assert!(matches!(error, RpcError::NoHandler { .. }), "{error:?}");
}

#[tokio::test]
async fn a_payload_that_does_not_match_the_contract_is_answered_with_400() {
    let fixture = Fixture::start().await;
    let error = fixture
        .client
        .send_raw(&json!({"cmd": "echo"}), &json!({"nope": 1}), SendOptions::default())
        .await
        .unwrap_err();
    match error {
        RpcError::Remote { error, .. } => assert_eq!(error.status(), Some(400)),
        other => panic!("expected a 400 error object, got {other:?}"),
    }
}

#[tokio::test]
async fn patterns_route_whatever_their_key_order_or_encoding() {
    let fixture = Fixture::start().await;
    for pattern in [json!({"cmd": "fail", "role": "test"}), json!(r#"{"role":"test","cmd":"fail"}"#)] {
        let error =
            fixture.client.send_raw(&pattern, &json!({"status": 418}), SendOptions::default()).await.unwrap_err();
        assert!(
            matches!(&error, RpcError::Remote { error, .. } if error.status() == Some(418)),
            "{pattern}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_undecodable_reply_is_a_decode_error() {
    let fixture = Fixture::start().await;
    // A rogue responder on its own queue answers with something that is not a NestJS reply.
    let rogue = tests::unique("rogue");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.declare_queue(&rogue).await;
    let client = fixture.client.clone();
    let queue = rogue.clone();
    let call = tokio::spawn(async move {
        let options = SendOptions { queue: Some(queue), timeout: Some(Duration::from_secs(10)) };
        client.send_raw(&json!({"cmd": "x"}), &json!({}), options).await
    });
    let request = probe.wait_for_message(&rogue, crate::DEADLINE).await;
    let properties =
        lapin::BasicProperties::default().with_correlation_id(request.correlation_id.clone().unwrap().into());
    probe.publish_raw("", request.reply_to.as_deref().unwrap(), b"<html>not json</html>", properties).await;
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, RpcError::Decode { .. }), "{error:?}");
    probe.delete_queues(&[&rogue]).await;
}

#[tokio::test]
async fn requests_carry_the_nestjs_packet_and_the_callers_trace() {
    let fixture = Fixture::start().await;
    let root = TraceContext::new_root();
    let reply = root.scope(fixture.client.send(&Echo { text: "t".into(), delay_ms: 0 })).await.unwrap();
    assert_eq!(reply.trace_id, root.trace_id(), "the handler continues the caller's trace");

    // On the wire: `{"pattern":…,"data":…,"id":…}` with id = correlation_id, reply_to = direct reply-to.
    let observed = tests::unique("observed");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.declare_queue(&observed).await;
    let client = fixture.client.clone();
    let queue = observed.clone();
    let _pending = tokio::spawn(async move {
        let options = SendOptions { queue: Some(queue), timeout: Some(Duration::from_millis(500)) };
        client.send_raw(&json!({"cmd": "echo"}), &json!({"text": "wire"}), options).await
    });
    let message = probe.wait_for_message(&observed, crate::DEADLINE).await;
    let body = message.json();
    assert_eq!(body["pattern"], json!({"cmd": "echo"}));
    assert_eq!(body["data"], json!({"text": "wire"}));
    assert_eq!(body["id"].as_str(), message.correlation_id.as_deref());
    // The broker rewrites the pseudo-queue into the caller's private reply address.
    assert!(message.reply_to.as_deref().unwrap().starts_with("amq.rabbitmq.reply-to."), "{:?}", message.reply_to);
    assert!(message.header("traceparent").is_some());
    probe.delete_queues(&[&observed]).await;
}

#[tokio::test]
async fn sends_fail_fast_when_the_broker_is_unreachable() {
    let proxy = tests::ChaosProxy::in_front_of(&tests::amqp_url().await).await;
    proxy.cut().await;
    let shutdown = shared::CancellationToken::new();
    let client = shared::Client::start(
        shared::ClientConfig::new(shared::BrokerConfig::new(proxy.url_for(&tests::amqp_url().await), "unreachable"))
            .queue("nowhere"),
        shutdown.clone(),
    );
    let started = std::time::Instant::now();
    let error = client.send(&Echo { text: "x".into(), delay_ms: 0 }).await.unwrap_err();
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "failing took {:?}", started.elapsed());
    shutdown.cancel();
}

#[tokio::test]
async fn a_reply_carrying_an_id_is_no_handler_only_for_the_nestjs_message() {
    let fixture = Fixture::start().await;
    // A responder of our own answers each call with an `id` beside its error, as NestJS's
    // no-handler reply has one.
    let responder = tests::unique("responder");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.declare_queue(&responder).await;
    let replies = [
        (json!({"status": 418, "message": "teapot"}), false),
        (json!("some other failure"), false),
        (json!(shared::wire::NO_HANDLER_MESSAGE), true),
    ];
    for (err, no_handler) in replies {
        let client = fixture.client.clone();
        let queue = responder.clone();
        let call = tokio::spawn(async move {
            let options = SendOptions { queue: Some(queue), timeout: Some(Duration::from_secs(10)) };
            client.send_raw(&json!({"cmd": "x"}), &json!({}), options).await
        });
        let request = probe.wait_for_message(&responder, crate::DEADLINE).await;
        let id = request.correlation_id.clone().unwrap();
        let properties = lapin::BasicProperties::default().with_correlation_id(id.as_str().into());
        let body = json!({"id": id, "err": err, "status": "error"}).to_string();
        probe.publish_raw("", request.reply_to.as_deref().unwrap(), body.as_bytes(), properties).await;
        let error = call.await.unwrap().unwrap_err();
        if no_handler {
            assert!(matches!(error, RpcError::NoHandler { .. }), "{err}: {error:?}");
        } else {
            assert!(matches!(&error, RpcError::Remote { error, .. } if error.0 == err), "{err}: {error:?}");
        }
    }
    probe.delete_queues(&[&responder]).await;
}
