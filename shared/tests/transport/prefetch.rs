//! Prefetch bounds the handlers running at once, per queue.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, Event, EventFailure, Listener,
    MessageContext, Server, ServerConfig, State,
};
use tokio::sync::Semaphore;

use crate::DEADLINE;

/// `test.hold`: its handler holds until the test releases it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    n: u32,
}

impl Event for Hold {
    const PATTERN: &'static str = "test.hold";
}

/// Handlers running now and the most ever seen at once, per queue.
struct Gauge {
    queues: Mutex<HashMap<String, (u32, u32)>>,
    finished: Mutex<u32>,
    release: Semaphore,
}

impl Default for Gauge {
    fn default() -> Self {
        Self { queues: Mutex::default(), finished: Mutex::default(), release: Semaphore::new(0) }
    }
}

impl Gauge {
    fn running(&self, queue: &str) -> (u32, u32) {
        self.queues.lock().unwrap().get(queue).copied().unwrap_or_default()
    }
}

async fn hold(State(gauge): State<Arc<Gauge>>, ctx: MessageContext, _event: Hold) -> Result<(), EventFailure> {
    {
        let mut queues = gauge.queues.lock().unwrap();
        let (now, high) = queues.entry(ctx.queue.clone()).or_default();
        *now += 1;
        *high = (*high).max(*now);
    }
    gauge.release.acquire().await.expect("the semaphore stays open").forget();
    if let Some((now, _)) = gauge.queues.lock().unwrap().get_mut(&ctx.queue) {
        *now -= 1;
    }
    *gauge.finished.lock().unwrap() += 1;
    Ok(())
}

#[tokio::test]
async fn prefetch_bounds_concurrent_handlers_per_queue() {
    tests::logs::init();
    const PREFETCH: u16 = 3;
    const PER_QUEUE: u32 = 10;
    let amqp_url = tests::amqp_url().await;
    let queues = [tests::unique("prefetch_a"), tests::unique("prefetch_b")];
    let gauge = Arc::new(Gauge::default());
    let mut config = ServerConfig::new(BrokerConfig::new(&amqp_url, "prefetch-test"), "prefetch-test");
    config.prefetch = PREFETCH;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = Server::new(Arc::clone(&gauge))
        .event(hold)
        .listen(Listener::queue(&queues[0]))
        .listen(Listener::queue(&queues[1]))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let client = Client::start(ClientConfig::new(BrokerConfig::new(&amqp_url, "prefetch-client")), shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    for queue in &queues {
        for n in 0..PER_QUEUE {
            let options = EmitOptions { target: Some(EmitTarget::Queue(queue.clone())), ..EmitOptions::default() };
            client.emit_with(&Hold { n }, options).await.unwrap();
        }
    }
    // Every queue has `PREFETCH` handlers held and the rest of its messages still ready on
    // the broker: nothing more can be delivered until a handler finishes.
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    let backlog = PER_QUEUE - u32::from(PREFETCH);
    tests::eventually(DEADLINE, || async {
        for queue in &queues {
            let (running, _) = gauge.running(queue);
            let ready = probe.message_count(queue).await;
            if running != u32::from(PREFETCH) || ready != backlog {
                return Err(format!("{queue}: {running} running, {ready} ready"));
            }
        }
        Ok(())
    })
    .await;
    for queue in &queues {
        assert_eq!(gauge.running(queue).1, u32::from(PREFETCH), "{queue}: at most prefetch at once");
    }

    // Released, the queues drain, and the high-water mark shows the bound held throughout.
    gauge.release.add_permits(2 * PER_QUEUE as usize);
    tests::eventually(DEADLINE, || async {
        let finished = *gauge.finished.lock().unwrap();
        if finished == 2 * PER_QUEUE { Ok(()) } else { Err(format!("{finished} handled")) }
    })
    .await;
    for queue in &queues {
        assert_eq!(gauge.running(queue), (0, u32::from(PREFETCH)), "{queue}");
        probe.assert_empty(queue).await;
    }
    for queue in &queues {
        probe.assert_empty(&shared::topology::dlq_name(queue)).await;
    }
    shutdown.cancel();
    server.stopped().await;
    for queue in &queues {
        crate::delete_queue_and_failure_queues(&probe, queue, &shared::RetryPolicy::default()).await;
    }
}
