//! `get_user` end to end against a raw lapin ping-pong, on one broker, in one run.
//!
//! (a) `get_user`: shared `Client` → RabbitMQ → user-service (in-process, `App::build`) →
//!     Postgres → reply over direct reply-to.
//! (b) raw: a lapin client publishing with `reply_to = amq.rabbitmq.reply-to` and correlation
//!     ids, a lapin consumer (same prefetch) that replies at once with a body of the same
//!     size as (a)'s reply, then acks. It is the floor the transport could reach.
//!
//! For each concurrency, N tasks call in a loop: first for the warm-up, then for the measured
//! window. `cargo bench -p user-service --bench get_user`; environment: `BENCH_SECONDS`
//! (default 5), `BENCH_WARMUP_SECONDS` (1), `BENCH_CONCURRENCY` (`1,16,64`), and the test
//! kit's `TEST_AMQP_URL` / `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Request,
    contracts::{GetUser, User},
    topology, wire,
};
use tests::{BrokerProbe, DEADLINE, ServiceEnv, TestDb, unique};
use tokio::sync::oneshot;
use user_service::{App, Config};

const PREFETCH: u16 = 32;

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    // The harness's names, database and cleanup; the service's own defaults otherwise.
    let env = ServiceEnv::new().await.set("PREFETCH", PREFETCH.to_string());
    let amqp = env.amqp_url().to_owned();
    let raw_queue = unique("bench_raw");
    let shutdown = CancellationToken::new();

    let app = start_service(&env, shutdown.clone()).await;
    let user = seed(env.db()).await;
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(amqp.clone(), "bench-client")).queue(env.user_queue()),
        shutdown.clone(),
    );
    assert!(client.wait_connected(Duration::from_secs(10)).await, "bench client did not connect");
    let request = GetUser { id: user.id.to_string() };
    assert_eq!(client.send(&request).await.expect("get_user answers"), user);

    // The raw pair exchanges bodies of the sizes get_user's request and reply have.
    let request_body = serde_json::to_vec(&wire::RequestPacket {
        pattern: &GetUser::pattern(),
        data: &serde_json::to_value(&request).unwrap(),
        id: "0123456789abcdef0123456789abcdef",
    })
    .unwrap();
    let reply_body = wire::encode_success(&user).unwrap();
    let raw_server = RawServer::start(&amqp, &raw_queue, reply_body).await;
    let raw_client = RawClient::start(&amqp, &raw_queue, request_body).await;

    // The load average tells how much else competed for the CPUs (broker and database included).
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "get_user vs raw lapin ping-pong: {:?} per point after {:?} warm-up, prefetch {PREFETCH}, {} CPU(s), \
         load average {}\n",
        settings.window,
        settings.warmup,
        std::thread::available_parallelism().map_or(0, usize::from),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!("| concurrency | get_user req/s | p50 | p99 | raw req/s | p50 | p99 | get_user / raw |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &concurrency in &settings.concurrency {
        let ours = measure(&settings, concurrency, {
            let client = client.clone();
            let request = request.clone();
            move || {
                let client = client.clone();
                let request = request.clone();
                async move { client.send(&request).await.is_ok() }
            }
        })
        .await;
        let raw = measure(&settings, concurrency, {
            let raw_client = raw_client.clone();
            move || {
                let raw_client = raw_client.clone();
                async move { raw_client.call().await }
            }
        })
        .await;
        println!(
            "| {concurrency} | {:.0} | {} | {} | {:.0} | {} | {} | {:.0} % |",
            ours.per_second,
            ms(ours.p50),
            ms(ours.p99),
            raw.per_second,
            ms(raw.p50),
            ms(raw.p99),
            100.0 * ours.per_second / raw.per_second,
        );
        if ours.failures + raw.failures > 0 {
            println!("|  | {} failed calls |  |  | {} failed calls |  |  |  |", ours.failures, raw.failures);
        }
    }

    shutdown.cancel();
    app.run_until_stopped().await;
    raw_server.stop().await;
    BrokerProbe::connect(&amqp).await.delete_queues(&[&raw_queue]).await;
    env.finish().await;
}

struct Settings {
    window: Duration,
    warmup: Duration,
    concurrency: Vec<usize>,
}

impl Settings {
    fn from_env() -> Self {
        let seconds = |var: &str, default: f64| {
            Duration::from_secs_f64(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        let concurrency = std::env::var("BENCH_CONCURRENCY")
            .ok()
            .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect::<Vec<usize>>())
            .filter(|list| !list.is_empty())
            .unwrap_or_else(|| vec![1, 16, 64]);
        Self { window: seconds("BENCH_SECONDS", 5.0), warmup: seconds("BENCH_WARMUP_SECONDS", 1.0), concurrency }
    }
}

async fn start_service(env: &ServiceEnv, shutdown: CancellationToken) -> App {
    let config = Config::from_lookup(|var| env.lookup(var)).expect("bench configuration");
    let app = App::build(config, shutdown).await.expect("user-service starts");
    assert!(app.wait_ready(DEADLINE).await, "user-service did not start consuming");
    app
}

async fn seed(db: &TestDb) -> User {
    let user = User {
        id: uuid::Uuid::new_v4(),
        email: "ada@example.com".into(),
        name: "Ada Lovelace".into(),
        created_at: chrono::DateTime::from_timestamp_millis(1_714_564_800_123).unwrap(),
    };
    sqlx::query!(
        "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)",
        user.id,
        user.email,
        user.name,
        user.created_at,
    )
    .execute(&db.pool().await)
    .await
    .expect("seed the user");
    user
}

/// One point of the table.
struct Sample {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failures: u64,
}

/// Runs `call` in `concurrency` loops: warm-up first, then the measured window.
async fn measure<F, Fut>(settings: &Settings, concurrency: usize, call: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let started = Instant::now();
    let measure_from = started + settings.warmup;
    let stop_at = measure_from + settings.window;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= stop_at {
                        break;
                    }
                    let ok = call().await;
                    if sent >= measure_from {
                        latencies.push(sent.elapsed());
                        failures += u64::from(!ok);
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mine, failed) = worker.await.expect("a bench worker");
        latencies.extend(mine);
        failures += failed;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    Sample {
        per_second: latencies.len() as f64 / settings.window.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
        failures,
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

async fn connect(amqp: &str, name: &str) -> Connection {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(amqp, properties).await.expect("raw connection")
}

/// A consumer that answers every request at once, then acks it.
struct RawServer {
    connection: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start(amqp: &str, queue: &str, reply: Vec<u8>) -> Self {
        let connection = connect(amqp, "bench-raw-server").await;
        let channel = connection.create_channel().await.unwrap();
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.into(), durable, FieldTable::default()).await.unwrap();
        let mut consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let reply: Arc<[u8]> = reply.into();
        let task = tokio::spawn(async move {
            // Each delivery is answered on a task of its own, as the shared server does, so
            // that up to PREFETCH replies are under way at once.
            while let Some(Ok(delivery)) = consumer.next().await {
                let (Some(reply_to), Some(id)) =
                    (delivery.properties.reply_to().clone(), delivery.properties.correlation_id().clone())
                else {
                    continue;
                };
                let (channel, reply) = (channel.clone(), Arc::clone(&reply));
                tokio::spawn(async move {
                    let properties = BasicProperties::default().with_correlation_id(id);
                    let options = BasicPublishOptions::default();
                    if channel.basic_publish("".into(), reply_to, options, &reply, properties).await.is_ok() {
                        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    }
                });
            }
        });
        Self { connection, task }
    }

    async fn stop(self) {
        let _ = self.connection.close(200, "bench done".into()).await;
        let _ = self.task.await;
    }
}

/// A direct reply-to client: one channel publishes and consumes the replies, matched to
/// callers by correlation id.
#[derive(Clone)]
struct RawClient {
    channel: Channel,
    queue: Arc<str>,
    body: Arc<[u8]>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    next_id: Arc<AtomicU64>,
    _connection: Arc<Connection>,
}

impl RawClient {
    async fn start(amqp: &str, queue: &str, body: Vec<u8>) -> Self {
        let connection = connect(amqp, "bench-raw-client").await;
        let channel = connection.create_channel().await.unwrap();
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut replies =
            channel.basic_consume(topology::REPLY_TO.into(), "".into(), no_ack, FieldTable::default()).await.unwrap();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
        let waiting = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply.properties.correlation_id().as_ref().and_then(|id| id.as_str().parse::<u64>().ok());
                if let Some(caller) = id.and_then(|id| waiting.lock().unwrap().remove(&id)) {
                    let _ = caller.send(());
                }
            }
        });
        Self {
            channel,
            queue: queue.into(),
            body: body.into(),
            pending,
            next_id: Arc::default(),
            _connection: Arc::new(connection),
        }
    }

    async fn call(&self) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, reply) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, done);
        let properties = BasicProperties::default()
            .with_correlation_id(id.to_string().into())
            .with_reply_to(topology::REPLY_TO.into());
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_ref().into(),
                BasicPublishOptions::default(),
                &self.body,
                properties,
            )
            .await;
        published.is_ok() && tokio::time::timeout(Duration::from_secs(5), reply).await.is_ok_and(|r| r.is_ok())
    }
}
