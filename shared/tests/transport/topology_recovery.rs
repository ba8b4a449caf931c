//! Topology redeclared: queues that disappear under a running server (deleted by hand, or
//! lost with a broker restart) are declared again and consumed again, without a restart.

use std::{sync::Arc, time::Duration};

use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, Listener, SendOptions, ServerConfig, topology};

use crate::{DEADLINE, Echo, Ping, Recorder};

fn quick(queue: &str) -> SendOptions {
    SendOptions { queue: Some(queue.to_owned()), timeout: Some(Duration::from_millis(500)) }
}

#[tokio::test]
async fn queues_deleted_while_consumed_are_redeclared_and_consumed_again() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let (deleted, kept) = (tests::unique("deleted"), tests::unique("kept"));
    let recorder = Arc::new(Recorder::default());
    let config = ServerConfig::new(BrokerConfig::new(&amqp_url, "topology-test"), "topology-test");
    let policy = config.retry.clone();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = shared::Server::new(Arc::clone(&recorder))
        .request(crate::echo)
        .listen(Listener::queue(&deleted))
        .listen(Listener::queue(&kept))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    // The client must not declare the queue itself: only the server's redeclaration counts.
    let mut client_config = ClientConfig::new(BrokerConfig::new(&amqp_url, "topology-client"));
    client_config.declare_queue = false;
    let client = Client::start(client_config, shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    let echo = Echo { text: "hi".into(), delay_ms: 0 };
    for queue in [&deleted, &kept] {
        assert_eq!(client.send_with(&echo, quick(queue)).await.unwrap().text, "hi");
    }

    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    let dlq = topology::dlq_name(&deleted);
    // A marker in the DLQ (which nobody consumes) tells a redeclared DLQ from the old one.
    probe.publish_raw("", &dlq, b"marker", lapin::BasicProperties::default()).await;
    assert_eq!(probe.message_count(&dlq).await, 1);
    // The DLQ first: deleting the queue makes the server redeclare at once.
    probe.delete_queues(&[&dlq, &deleted]).await;
    // The broker cancelled the consumer of the deleted queue; the server declares it (and its
    // DLQ) again and resumes consuming it.
    tests::eventually(DEADLINE, || client.send_with(&echo, quick(&deleted))).await;
    assert!(probe.queue_exists(&dlq).await, "the DLQ was not redeclared");
    assert_eq!(probe.message_count(&dlq).await, 0, "the DLQ was not deleted");
    assert_eq!(client.send_with(&echo, quick(&kept)).await.unwrap().text, "hi");
    assert!(server.is_ready());
    shutdown.cancel();
    server.stopped().await;
    for queue in [&deleted, &kept] {
        crate::delete_queue_and_failure_queues(&probe, queue, &policy).await;
    }
}

#[tokio::test]
async fn topology_is_redeclared_after_a_broker_restart() {
    tests::logs::init();
    let mut node = tests::local_rabbit::LocalRabbit::start().await;
    let url = node.url();
    // The server reaches the node through a proxy that is cut while the node restarts, so the
    // test sees the topology lost before the server can declare it again.
    let server_link = tests::ChaosProxy::in_front_of(&url).await;
    // A non-durable queue does not survive the restart: the server must declare it again.
    let queue = tests::unique("restart");
    let exchange = tests::unique("events");
    let recorder = Arc::new(Recorder::default());
    let mut config = ServerConfig::new(BrokerConfig::new(server_link.url_for(&url), "restart-test"), "restart-test");
    config.retry = crate::fast_retry(3);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = shared::Server::new(Arc::clone(&recorder))
        .request(crate::echo)
        .event(crate::ping)
        .listen(Listener::queue(&queue).durable(false).bind_events(&exchange))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let mut client_config =
        ClientConfig::new(BrokerConfig::new(&url, "restart-client")).queue(&queue).events_exchange(&exchange);
    client_config.declare_queue = false;
    let client = Client::start(client_config, shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    let echo = Echo { text: "before".into(), delay_ms: 0 };
    assert_eq!(client.send(&echo).await.unwrap().text, "before");

    server_link.cut().await;
    node.stop().await;
    tests::eventually(DEADLINE, || async { if server.is_ready() { Err("still ready") } else { Ok(()) } }).await;
    node.start_again().await;
    let queues = node.list_queues().await.unwrap();
    assert!(queues.iter().all(|q| q.name != queue), "the queue survived the restart: {queues:?}");
    server_link.restore();

    // The server reconnects, declares the queue, binds it and consumes: requests and events
    // flow again.
    let deadline = Duration::from_secs(60);
    let echo = Echo { text: "after".into(), delay_ms: 0 };
    let reply = tests::eventually(deadline, || client.send_with(&echo, quick(&queue))).await;
    assert_eq!(reply.text, "after");
    assert!(server.wait_ready(DEADLINE).await);
    tests::eventually(DEADLINE, || client.emit(&Ping { n: 5 })).await;
    tests::eventually(DEADLINE, || async {
        let pings = recorder.pings.lock().unwrap().clone();
        if pings.iter().any(|(ping, _)| ping.n == 5) { Ok(()) } else { Err("the event was not consumed") }
    })
    .await;
    shutdown.cancel();
    server.stopped().await;
}
