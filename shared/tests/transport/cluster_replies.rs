//! On a cluster (several broker URLs) a request that comes back after a lost consumer is
//! settled but not answered: its caller's direct reply-to address may belong to a node that
//! left, and publishing to such an address costs the replier its connection on RabbitMQ 3.10.
//! On a single node it is answered as usual. Both seen from a caller reading its own reply
//! queue, with prefetch 1 so that requests are handled, and answered, in order.

use std::sync::Arc;

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use serde_json::json;
use shared::{BrokerConfig, CancellationToken, Listener, ServerConfig, retry::DELIVERY_COUNT_HEADER};

use crate::{DEADLINE, Recorder};

/// A server of `echo` on `urls` (one URL, or a list), prefetch 1; requests are published to
/// it directly, with `caller` as their reply queue.
async fn answers_to_a_counted_request(urls: &str, amqp_url: &str) -> Vec<String> {
    let queue = tests::unique("cluster_replies");
    let mut config = ServerConfig::new(BrokerConfig::new(urls, "cluster-replies-test"), "cluster-replies-test");
    config.prefetch = 1;
    let policy = config.retry.clone();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = shared::Server::new(Arc::new(Recorder::default()))
        .request(crate::echo)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let probe = tests::BrokerProbe::connect(amqp_url).await;
    let caller = tests::unique("caller");
    probe.declare_queue(&caller).await;

    // A request the broker delivered before (a quorum queue's `x-delivery-count`), one with
    // a count of 0 (never delivered before), then one without the header.
    for (id, count) in [("counted", Some(1)), ("zero", Some(0)), ("fresh", None)] {
        let mut headers = FieldTable::default();
        if let Some(count) = count {
            headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(count));
        }
        let properties = BasicProperties::default()
            .with_reply_to(caller.as_str().into())
            .with_correlation_id(id.into())
            .with_headers(headers);
        let body = json!({"pattern": {"cmd": "echo"}, "data": {"text": id}, "id": id}).to_string();
        probe.publish_raw("", &queue, body.as_bytes(), properties).await;
    }
    // The fresh request is always answered; whatever came before it was handled first.
    let mut answered = Vec::new();
    loop {
        let reply = probe.wait_for_message(&caller, DEADLINE).await;
        let id = reply.correlation_id.clone().unwrap();
        answered.push(id.clone());
        if id == "fresh" {
            break;
        }
    }
    shutdown.cancel();
    server.stopped().await;
    // Answered or not, both requests were settled.
    probe.assert_empty(&queue).await;
    probe.assert_empty(&shared::topology::dlq_name(&queue)).await;
    crate::delete_queue_and_failure_queues(&probe, &queue, &policy).await;
    probe.delete_queues(&[&caller]).await;
    answered
}

#[tokio::test]
async fn on_a_single_node_a_redelivered_request_is_answered() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    assert_eq!(answers_to_a_counted_request(&amqp_url, &amqp_url).await, ["counted", "zero", "fresh"]);
}

#[tokio::test]
async fn on_a_cluster_a_redelivered_request_is_settled_but_not_answered() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    // Two URLs make a cluster to the server (here both name the one test broker).
    let urls = format!("{amqp_url},{amqp_url}");
    assert_eq!(answers_to_a_counted_request(&urls, &amqp_url).await, ["zero", "fresh"]);
}
