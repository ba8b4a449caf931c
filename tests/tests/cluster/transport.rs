//! Transport behaviour on the cluster: consumers the broker cancels, and broker replies that
//! echo credentials.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, Event, EventFailure, Listener,
    MessageContext, QueueType, RetryPolicy, Server, ServerConfig, State,
};

#[derive(Debug, Serialize, Deserialize)]
struct Nudge {
    n: u32,
}

impl Event for Nudge {
    const PATTERN: &'static str = "cluster.nudge";
}

async fn on_nudge(State(seen): State<Arc<AtomicUsize>>, _nudge: Nudge) -> Result<(), EventFailure> {
    seen.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Fails the first attempt of every nudge, records the attempt that succeeded.
async fn flaky_nudge(
    State(seen): State<Arc<AtomicUsize>>,
    context: MessageContext,
    _nudge: Nudge,
) -> Result<(), EventFailure> {
    if context.attempt < 2 {
        return Err(EventFailure::transient(std::io::Error::other("first attempt fails")));
    }
    seen.store(usize::try_from(context.attempt).unwrap(), Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_failed_event_comes_back_through_a_quorum_delay_queue() {
    let (cluster, _turn) = crate::cluster().await;
    let queue = tests::unique("quorum_retry");
    let seen = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let mut config = ServerConfig::new(
        BrokerConfig::new(cluster.urls(), "quorum-retry-server").queue_type(QueueType::Quorum),
        "quorum-retry-test",
    );
    config.retry =
        RetryPolicy { max_attempts: 3, initial_delay: std::time::Duration::from_millis(200), ..RetryPolicy::default() };
    let delays = config.retry.delays();
    let server = Server::new(Arc::clone(&seen))
        .event(flaky_nudge)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(tests::DEADLINE).await);
    let client =
        Client::start(ClientConfig::new(BrokerConfig::new(cluster.urls(), "quorum-retry-client")), shutdown.clone());
    assert!(client.wait_connected(tests::DEADLINE).await);
    let to_queue = EmitOptions { target: Some(EmitTarget::Queue(queue.clone())), ..EmitOptions::default() };
    client.emit_with(&Nudge { n: 1 }, to_queue).await.unwrap();
    tests::eventually(tests::DEADLINE, || async {
        match seen.load(Ordering::SeqCst) {
            0 => Err("not handled yet".to_owned()),
            attempt => Ok(attempt),
        }
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 2, "handled on the second attempt, after one delay");
    // The delay and dead-letter queues are quorum queues (the delay ones dead-letter at least once).
    crate::assert_all_quorum(cluster, &[queue.as_str()]).await;
    let queues = cluster.list_queues().await;
    let dlq = shared::topology::dlq_name(&queue);
    assert!(queues.iter().any(|q| q.name == dlq && q.messages == 0), "{queues:?}");
    client.shutdown().await;
    shutdown.cancel();
    server.stopped().await;
    let mut names = vec![queue.clone(), dlq];
    names.extend(delays.iter().map(|delay| shared::topology::retry_queue_name(&queue, *delay)));
    let probe = tests::BrokerProbe::connect(&cluster.url(0)).await;
    probe.delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test]
#[ignore = "flaky: in 1 of 4 fresh-clone CI runs the deleted queue was not redeclared within 20 s; \
            run it with `cargo test -p tests --test cluster -- --ignored` (see docs/cluster.md)"]
async fn a_consumer_the_broker_cancels_is_resumed() {
    let (cluster, _turn) = crate::cluster().await;
    let queue = tests::unique("cancelled");
    let seen = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let broker = BrokerConfig::new(cluster.urls(), "cancel-server").queue_type(QueueType::Quorum);
    let server = Server::new(Arc::clone(&seen))
        .event(on_nudge)
        .listen(Listener::queue(&queue))
        .start(ServerConfig::new(broker, "cancel-test"), shutdown.clone());
    assert!(server.wait_ready(tests::DEADLINE).await);
    let client = Client::start(ClientConfig::new(BrokerConfig::new(cluster.urls(), "cancel-client")), shutdown.clone());
    assert!(client.wait_connected(tests::DEADLINE).await);

    // Deleting the queue makes the broker cancel its consumer (basic.cancel), as it does
    // when a queue goes away under a consumer.
    let probe = tests::BrokerProbe::connect(&cluster.url(1)).await;
    probe.delete_queues(&[queue.as_str()]).await;
    let to_queue = || EmitOptions { target: Some(EmitTarget::Queue(queue.clone())), ..EmitOptions::default() };
    // The server declares the queue again and consumes it: an event sent to it is handled.
    tests::eventually(tests::DEADLINE, || async {
        client.emit_with(&Nudge { n: 1 }, to_queue()).await.map_err(|error| error.to_string())
    })
    .await;
    tests::eventually(tests::DEADLINE, || async {
        if seen.load(Ordering::SeqCst) >= 1 { Ok(()) } else { Err("not handled yet") }
    })
    .await;
    assert!(server.is_ready());
    client.shutdown().await;
    shutdown.cancel();
    server.stopped().await;
    let names = [queue.clone(), shared::topology::dlq_name(&queue)];
    probe.delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn a_broker_reply_echoing_a_url_reaches_no_error_with_its_password() {
    let (cluster, _turn) = crate::cluster().await;
    // The vhost of the report: a list read as one URL put the other URLs, passwords
    // included, into the vhost, and the broker's NOT_ALLOWED reply echoed them.
    let vhost = "cluster%2Camqp%3A%2F%2Fguest%3Ahunter2%40127.0.0.1%3A5683%2Fcluster";
    let url = format!("amqp://guest:guest@{}/{vhost}", cluster.address(0));
    let error = shared::connection::connect(&BrokerConfig::new(url, "redaction")).await.err().unwrap();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("vhost") && shown.contains("***@"), "the broker's reply is kept, redacted: {shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(error.node, cluster.address(0));
}
