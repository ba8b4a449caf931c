//! Request/response throughput and latency of our client → our server (a trivial handler)
//! against a raw lapin ping-pong over direct reply-to, measured in the same run on the same
//! broker. Run: `cargo bench -p shared --bench rpc` (`BENCH_SECONDS` per point, default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Listener, Request, RpcException, Server, ServerConfig,
};
use tokio::sync::oneshot;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const PREFETCH: u16 = 64;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    n: u64,
}

impl Request for Ping {
    type Response = Pong;
    const PATTERN: &'static str = r#"{"cmd":"ping"}"#;
}

async fn pong(ping: Ping) -> Result<Pong, RpcException> {
    Ok(Pong { n: ping.n })
}

/// One measured point.
struct Point {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `concurrency` callers of `call` for a warm-up and then `duration`.
async fn measure<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Point
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let run = |span: Duration| {
        let call = call.clone();
        async move {
            let stop = Instant::now() + span;
            let workers = (0..concurrency).map(|worker| {
                let call = call.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut n = worker as u64 * 1_000_000_000;
                    while Instant::now() < stop {
                        let started = Instant::now();
                        call(n).await;
                        latencies.push(started.elapsed());
                        n += 1;
                    }
                    latencies
                })
            });
            let mut all = Vec::new();
            for worker in futures::future::join_all(workers).await {
                all.extend(worker.unwrap());
            }
            all
        }
    };
    run(Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut latencies = run(duration).await;
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Point { rps: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99) }
}

/// The baseline: a raw lapin responder (echoes the body, acks after replying, same prefetch)
/// and a raw lapin caller over direct reply-to: the broker's limit for this exchange.
async fn raw_responder(url: &str, queue: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _connection = connection;
        while let Some(Ok(delivery)) = consumer.next().await {
            // Answer each delivery on its own task, as our server does, so the baseline is not
            // held back by handling one message at a time.
            let channel = channel.clone();
            tokio::spawn(async move {
                let reply_to = delivery.properties.reply_to().clone().unwrap();
                let properties = BasicProperties::default()
                    .with_correlation_id(delivery.properties.correlation_id().clone().unwrap());
                channel
                    .basic_publish("".into(), reply_to, BasicPublishOptions::default(), &delivery.data, properties)
                    .await
                    .unwrap();
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            });
        }
    });
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

async fn raw_caller(url: &str) -> (lapin::Channel, Waiters) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let waiters: Waiters = Arc::default();
    let mut replies = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let pending = Arc::clone(&waiters);
    tokio::spawn(async move {
        let _connection = connection;
        while let Some(Ok(delivery)) = replies.next().await {
            let id = delivery.properties.correlation_id().as_ref().unwrap().to_string();
            if let Some(waiter) = pending.lock().unwrap().remove(&id) {
                let _ = waiter.send(delivery.data);
            }
        }
    });
    (channel, waiters)
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let url = tests::amqp_url().await;
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let shutdown = CancellationToken::new();

    let ours_queue = tests::unique("bench_ours");
    let mut config = ServerConfig::new(BrokerConfig::new(&url, "bench-server"), "bench");
    config.prefetch = PREFETCH;
    let server = Server::new(()).request(pong).listen(Listener::queue(&ours_queue)).start(config, shutdown.clone());
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(&url, "bench-client")).queue(ours_queue.clone()),
        shutdown.clone(),
    );
    assert!(client.wait_connected(Duration::from_secs(10)).await);

    let raw_queue = tests::unique("bench_raw");
    raw_responder(&url, &raw_queue).await;
    let (raw_channel, waiters) = raw_caller(&url).await;

    println!(
        "| concurrency | raw lapin req/s | ours req/s | ours/raw | raw p50 | ours p50 | p50 ratio | raw p99 | ours p99 |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for concurrency in CONCURRENCY {
        let (channel, waiters, queue) = (raw_channel.clone(), Arc::clone(&waiters), raw_queue.clone());
        let raw = measure(concurrency, duration, move |n| {
            let (channel, waiters, queue) = (channel.clone(), Arc::clone(&waiters), queue.clone());
            async move {
                let id = format!("{n:x}");
                let (tx, rx) = oneshot::channel();
                waiters.lock().unwrap().insert(id.clone(), tx);
                let body = format!(r#"{{"pattern":{{"cmd":"ping"}},"data":{{"n":{n}}},"id":"{id}"}}"#);
                let properties = BasicProperties::default()
                    .with_correlation_id(id.into())
                    .with_reply_to("amq.rabbitmq.reply-to".into());
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap();
                rx.await.unwrap();
            }
        })
        .await;
        let caller = client.clone();
        let ours = measure(concurrency, duration, move |n| {
            let caller = caller.clone();
            async move {
                let pong = caller.send(&Ping { n }).await.unwrap();
                assert_eq!(pong.n, n);
            }
        })
        .await;
        println!(
            "| {concurrency} | {:.0} | {:.0} | {:.0} % | {} | {} | {:.2}× | {} | {} |",
            raw.rps,
            ours.rps,
            100.0 * ours.rps / raw.rps,
            micros(raw.p50),
            micros(ours.p50),
            ours.p50.as_secs_f64() / raw.p50.as_secs_f64(),
            micros(raw.p99),
            micros(ours.p99),
        );
    }
    shutdown.cancel();
    server.stopped().await;
    tests::BrokerProbe::connect(&url).await.delete_queues(&[&raw_queue, &ours_queue]).await;
}
