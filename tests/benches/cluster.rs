//! The cost of replication: `get_user` (our client → the real user-service → Postgres) and
//! events (our `emit`, confirmed → our server's handler) on a local three-node RabbitMQ
//! cluster with quorum queues, against the single node with classic queues, in the same run,
//! at concurrency 1, 16 and 64.
//!
//! Run: `cargo bench -p tests --bench cluster`. `BENCH_SECONDS` (default 5) is the measured
//! time per workload, setup and concurrency. The single node is the machine's RabbitMQ (or
//! `TEST_AMQP_URL`); the cluster is started by the bench (`tests::cluster`, about 30 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Event, EventFailure, Listener, QueueType, Server,
    ServerConfig, State,
    contracts::{GetUser, UserCreated},
};
use tests::{TestDb, cluster::LocalCluster};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// A setup under test: where the broker is and which queues the services own.
struct Setup {
    name: &'static str,
    urls: String,
    /// One node's URL, to delete the bench's queues afterwards.
    probe_url: String,
    queue_type: QueueType,
}

/// One measured point.
#[derive(Default, Clone)]
struct Point {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Point {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// The bench's event: when it was emitted, in ns since the bench started.
#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    sent_ns: u64,
}

impl Event for Tick {
    const PATTERN: &'static str = "bench.tick";
}

/// What the event handler records.
struct Handled {
    start: Instant,
    latencies: Mutex<Vec<Duration>>,
}

async fn on_tick(State(handled): State<Arc<Handled>>, tick: Tick) -> Result<(), EventFailure> {
    let now = u64::try_from(handled.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    handled.latencies.lock().unwrap().push(Duration::from_nanos(now.saturating_sub(tick.sent_ns)));
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let measure = Duration::from_secs(seconds);
    let single = tests::amqp_url().await;
    eprintln!("starting a three-node cluster …");
    let cluster = LocalCluster::start(3).await;
    let setups = [
        Setup { name: "single node, classic", urls: single.clone(), probe_url: single, queue_type: QueueType::Classic },
        Setup {
            name: "3-node cluster, quorum",
            urls: cluster.urls(),
            probe_url: cluster.url(0),
            queue_type: QueueType::Quorum,
        },
    ];
    let mut results: HashMap<(&str, &str, usize), Point> = HashMap::new();
    for setup in &setups {
        for (concurrency, point) in bench_get_user(setup, measure).await {
            results.insert(("get_user", setup.name, concurrency), point);
        }
        for (concurrency, point) in bench_events(setup, measure).await {
            results.insert(("emit → handled", setup.name, concurrency), point);
        }
    }
    println!("\n| workload | setup | concurrency | per second | p50 | p99 |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for workload in ["get_user", "emit → handled"] {
        for setup in &setups {
            for concurrency in CONCURRENCY {
                let point = &results[&(workload, setup.name, concurrency)];
                println!(
                    "| {workload} | {} | {concurrency} | {:.0} | {:.2} ms | {:.2} ms |",
                    setup.name,
                    point.rate(),
                    point.percentile(0.5).as_secs_f64() * 1e3,
                    point.percentile(0.99).as_secs_f64() * 1e3
                );
            }
        }
    }
    println!("\nThe cost of replication (cluster/quorum against single/classic):");
    for workload in ["get_user", "emit → handled"] {
        for concurrency in CONCURRENCY {
            let (one, three) = (
                &results[&(workload, setups[0].name, concurrency)],
                &results[&(workload, setups[1].name, concurrency)],
            );
            println!(
                "  {workload:<15} concurrency {concurrency:>2}: throughput {:>5.0}% of single, p50 latency x{:.2}",
                three.rate() / one.rate() * 100.0,
                three.percentile(0.5).as_secs_f64() / one.percentile(0.5).as_secs_f64().max(1e-9)
            );
        }
    }
}

/// The real user-service on `setup`, one projected user, then `get_user` at each concurrency.
async fn bench_get_user(setup: &Setup, measure: Duration) -> Vec<(usize, Point)> {
    let db = TestDb::create().await;
    let (user_queue, events_queue, exchange) =
        (tests::unique("bench_user"), tests::unique("bench_user_events"), tests::unique("bench_events"));
    let queue_type = match setup.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    let vars = HashMap::from([
        ("AMQP_URL", setup.urls.clone()),
        ("AMQP_QUEUE_TYPE", queue_type.to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("USER_QUEUE", user_queue.clone()),
        ("USER_EVENTS_QUEUE", events_queue.clone()),
        ("EVENTS_EXCHANGE", exchange.clone()),
        ("OPS_ADDR", "127.0.0.1:0".to_owned()),
        ("PREFETCH", "64".to_owned()),
    ]);
    let shutdown = CancellationToken::new();
    let config = user_service::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let app = user_service::App::build(config, shutdown.clone()).await.unwrap();
    assert!(app.wait_ready(tests::DEADLINE).await);
    let service = tokio::spawn(app.run_until_stopped());
    let client = client(setup, "bench-get-user").queue(&user_queue).events_exchange(&exchange);
    let client = Client::start(client, shutdown.clone());
    assert!(client.wait_connected(tests::DEADLINE).await);
    let id = uuid::Uuid::new_v4();
    let user: UserCreated = serde_json::from_value(serde_json::json!({
        "id": id, "email": "bench@example.com", "name": "Bench", "createdAt": "2026-01-01T00:00:00.000Z"
    }))
    .unwrap();
    client.emit(&user).await.unwrap();
    let request = GetUser { id: id.to_string() };
    tests::eventually(tests::DEADLINE, || async { client.send(&request).await.map_err(|error| error.to_string()) })
        .await;

    let mut points = Vec::new();
    for concurrency in CONCURRENCY {
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let (client, request) = (client.clone(), GetUser { id: id.to_string() });
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < measure {
                    let sent = Instant::now();
                    client.send(&request).await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        });
        let mut point = Point::default();
        for worker in futures::future::join_all(workers).await {
            point.latencies.extend(worker.unwrap());
        }
        point.elapsed = started.elapsed();
        point.count = point.latencies.len();
        eprintln!("get_user {} c={concurrency}: {:.0}/s", setup.name, point.rate());
        points.push((concurrency, point));
    }
    client.shutdown().await;
    shutdown.cancel();
    service.await.unwrap();
    delete(setup, &[&user_queue, &events_queue], &exchange).await;
    points
}

/// Our server handling `Tick`s from its queue bound to an exchange, our client emitting them
/// (each confirmed) from `concurrency` tasks; handled per second and emit → handled latency.
async fn bench_events(setup: &Setup, measure: Duration) -> Vec<(usize, Point)> {
    let (queue, exchange) = (tests::unique("bench_ticks"), tests::unique("bench_tick_events"));
    let handled = Arc::new(Handled { start: Instant::now(), latencies: Mutex::new(Vec::new()) });
    let shutdown = CancellationToken::new();
    let mut server_config = ServerConfig::new(broker(setup, "bench-tick-server"), "bench");
    server_config.prefetch = 64;
    let server = Server::new(Arc::clone(&handled))
        .event(on_tick)
        .listen(Listener::queue(&queue).bind_events(&exchange))
        .start(server_config, shutdown.clone());
    assert!(server.wait_ready(tests::DEADLINE).await);
    let client = Client::start(client(setup, "bench-tick-client").events_exchange(&exchange), shutdown.clone());
    assert!(client.wait_connected(tests::DEADLINE).await);

    let mut points = Vec::new();
    for concurrency in CONCURRENCY {
        let emitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        handled.latencies.lock().unwrap().clear();
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let (client, handled, emitted) = (client.clone(), Arc::clone(&handled), Arc::clone(&emitted));
            tokio::spawn(async move {
                while started.elapsed() < measure {
                    let sent_ns = u64::try_from(handled.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    client.emit(&Tick { sent_ns }).await.unwrap();
                    emitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        });
        futures::future::join_all(workers).await;
        let total = emitted.load(std::sync::atomic::Ordering::Relaxed);
        tests::eventually(tests::DEADLINE, || async {
            let seen = handled.latencies.lock().unwrap().len();
            if seen >= total { Ok(()) } else { Err(format!("{seen} of {total} handled")) }
        })
        .await;
        let point = Point {
            count: total,
            elapsed: started.elapsed(),
            latencies: std::mem::take(&mut *handled.latencies.lock().unwrap()),
        };
        eprintln!("events {} c={concurrency}: {:.0}/s", setup.name, point.rate());
        points.push((concurrency, point));
    }
    client.shutdown().await;
    shutdown.cancel();
    server.stopped().await;
    delete(setup, &[&queue], &exchange).await;
    points
}

/// Deletes the bench's queues (their retry and dead-letter queues too) and exchange.
async fn delete(setup: &Setup, queues: &[&str], exchange: &str) {
    let probe = tests::BrokerProbe::connect(&setup.probe_url).await;
    let retry = shared::RetryPolicy::default();
    let mut names: Vec<String> = Vec::new();
    for queue in queues {
        names.push((*queue).to_owned());
        names.push(shared::topology::dlq_name(queue));
        names.extend(retry.delays().iter().map(|delay| shared::topology::retry_queue_name(queue, *delay)));
    }
    probe.delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    probe.delete_exchange(exchange).await;
}

fn broker(setup: &Setup, name: &str) -> BrokerConfig {
    BrokerConfig::new(&setup.urls, name).queue_type(setup.queue_type)
}

fn client(setup: &Setup, name: &str) -> ClientConfig {
    ClientConfig::new(broker(setup, name))
}
