//! Request/response throughput and latency of our client → our server (a trivial handler)
//! against a raw lapin ping-pong over direct reply-to, measured in the same run on the same
//! broker. Run: `cargo bench -p shared --bench rpc`. `BENCH_SECONDS` (default 10) is the
//! measured time per side and concurrency, taken in alternating one-second slices;
//! `BENCH_CONCURRENCY` (e.g. `64` or `1,64`) picks the concurrencies (default 1, 16, 64).
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
/// The length of one slice of an interleaved measurement.
const SLICE: Duration = Duration::from_secs(1);

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

/// One measured point: requests per second and latency percentiles.
#[derive(Default)]
struct Point {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time this process (client and server together) spent during the slices.
    cpu: Duration,
}

impl Point {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn at(&self, q: f64) -> Duration {
        self.latencies[((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1)]
    }

    /// This process's CPU time per request, in microseconds.
    fn cpu_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests as f64
    }

    fn absorb(&mut self, other: Point) {
        self.cpu += other.cpu;
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }
}

/// Runs `concurrency` callers of `call` back to back for `span`.
async fn measure<F, Fut>(concurrency: usize, span: Duration, call: F) -> Point
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let cpu_before = process_cpu();
    let started = Instant::now();
    let stop = started + span;
    let workers = (0..concurrency).map(|worker| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = worker as u64 * 1_000_000_000;
            while Instant::now() < stop {
                let sent = Instant::now();
                call(n).await;
                latencies.push(sent.elapsed());
                n += 1;
            }
            latencies
        })
    });
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker.unwrap());
    }
    // Calls finishing after `stop` count, so the span ends with the last of them.
    let elapsed = started.elapsed();
    Point { requests: latencies.len(), elapsed, latencies, cpu: process_cpu().saturating_sub(cpu_before) }
}

/// User + system CPU time of this process so far (Linux `/proc`; zero elsewhere).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15 (in clock ticks).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // The kernel reports in USER_HZ, 100 on every Linux platform Rust targets.
    Duration::from_millis(ticks * 10)
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
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let slices = (Duration::from_secs(seconds).as_millis() / SLICE.as_millis()).max(1);
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .map(|list| list.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| CONCURRENCY.to_vec());
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
        "| concurrency | raw lapin req/s | ours req/s | ours/raw | raw p50 | ours p50 | p50 ratio | raw p99 | ours p99 | raw CPU/req | ours CPU/req |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for concurrency in concurrencies {
        let (channel, waiters, queue) = (raw_channel.clone(), Arc::clone(&waiters), raw_queue.clone());
        let raw_call = move |n: u64| {
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
        };
        let caller = client.clone();
        let our_call = move |n: u64| {
            let caller = caller.clone();
            async move {
                let pong = caller.send(&Ping { n }).await.unwrap();
                assert_eq!(pong.n, n);
            }
        };
        // Warm both paths up, then alternate one-second slices of each so that both sides of
        // the ratio see the same background load on a shared machine.
        measure(concurrency, SLICE, raw_call.clone()).await;
        measure(concurrency, SLICE, our_call.clone()).await;
        let (mut raw, mut ours) = (Point::default(), Point::default());
        for _ in 0..slices {
            raw.absorb(measure(concurrency, SLICE, raw_call.clone()).await);
            ours.absorb(measure(concurrency, SLICE, our_call.clone()).await);
        }
        println!(
            "| {concurrency} | {:.0} | {:.0} | {:.0} % | {} | {} | {:.2}× | {} | {} | {:.0} µs | {:.0} µs |",
            raw.rps(),
            ours.rps(),
            100.0 * ours.rps() / raw.rps(),
            micros(raw.at(0.50)),
            micros(ours.at(0.50)),
            ours.at(0.50).as_secs_f64() / raw.at(0.50).as_secs_f64(),
            micros(raw.at(0.99)),
            micros(ours.at(0.99)),
            raw.cpu_per_request(),
            ours.cpu_per_request(),
        );
    }
    shutdown.cancel();
    server.stopped().await;
    tests::BrokerProbe::connect(&url).await.delete_queues(&[&raw_queue, &ours_queue]).await;
}
