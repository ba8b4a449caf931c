//! A failed message is acked only once its republish (retry or parking) is confirmed: when
//! the broker cannot take the copy, the original stays in its queue.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use serde_json::json;
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EventFailure, Listener, MessageContext, Server,
    ServerConfig, State, retry, topology,
};

use crate::{Broken, DEADLINE, ToldToFail};

/// Deliveries seen, and how many of them the broker marked redelivered.
#[derive(Default)]
struct Seen {
    deliveries: AtomicU32,
    redelivered: AtomicU32,
}

async fn refuse(State(seen): State<Arc<Seen>>, ctx: MessageContext, _event: Broken) -> Result<(), EventFailure> {
    seen.deliveries.fetch_add(1, Ordering::SeqCst);
    if ctx.redelivered {
        seen.redelivered.fetch_add(1, Ordering::SeqCst);
    }
    Err(EventFailure::permanent(ToldToFail))
}

#[tokio::test]
async fn an_event_whose_parking_fails_stays_in_its_queue_until_it_can_be_parked() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("parking");
    let dlq = topology::dlq_name(&queue);
    let seen = Arc::new(Seen::default());
    let config = ServerConfig::new(BrokerConfig::new(&amqp_url, "parking-test"), "parking-test");
    let policy = config.retry.clone();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server =
        Server::new(Arc::clone(&seen)).event(refuse).listen(Listener::queue(&queue)).start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(&amqp_url, "parking-client")).queue(&queue),
        shutdown.clone(),
    );
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    // The DLQ is gone (nobody consumes it, so the server does not notice): parking is
    // returned unroutable, and the event must not be acked.
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    probe.delete_queues(&[&dlq]).await;
    client.emit(&Broken { permanent: true }).await.unwrap();
    tests::eventually(DEADLINE, || async {
        match seen.redelivered.load(Ordering::SeqCst) {
            0 => Err("not handed back yet"),
            _ => Ok(()),
        }
    })
    .await;

    // With the DLQ back, the next delivery is parked, and only then acked.
    probe.declare_queue(&dlq).await;
    let parked = probe.wait_for_message(&dlq, DEADLINE).await;
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("permanent")));
    assert!(seen.deliveries.load(Ordering::SeqCst) >= 2);
    shutdown.cancel();
    server.stopped().await;
    probe.assert_empty(&queue).await;
    probe.assert_empty(&dlq).await;
    crate::delete_queue_and_failure_queues(&probe, &queue, &policy).await;
}
