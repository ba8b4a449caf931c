//! Our user-service against a NestJS 11 user-service doing the same job, side by side, and the
//! raw ping-pongs that bound both.
//!
//! `cargo bench -p user-service --bench nest_vs_ours` starts, each as an OS process of its own,
//! on the machine's RabbitMQ and Postgres (the test kit's `TEST_AMQP_URL`/`TEST_DATABASE_URL`):
//! - **ours**: the real `user-service` binary, default settings (prefetch 128, pool 16, one
//!   worker thread);
//! - **nest**: `tests/nest/nest-user-service.js` (`@MessagePattern({cmd:"get_user"})`, a `pg`
//!   Pool, `Transport.RMQ` with NestJS's defaults), on the same database;
//! - **lapin echo**: a lapin consumer (the same prefetch and worker threads, manual ack) answering every request at once
//!   with a body the size of get_user's reply, then acking: this binary re-run as
//!   `BENCH_ROLE=lapin-echo`;
//! - **amqplib echo**: the same echo in Node.js on amqplib (`tests/nest/amqplib-echo.js`).
//!
//! One raw lapin caller drives all four: NestJS request packets `{pattern, data, id}` with a
//! correlation id, answered over direct reply-to (`amq.rabbitmq.reply-to`), `c` calls in
//! flight. The database holds 1,000 users; calls cycle through their ids. For each
//! concurrency the targets take turns in slices (the order rotated every round), so that
//! whatever else the machine does hits them alike. Per target it prints req/s, p50, p99, the
//! CPU time per request of the service process, of RabbitMQ and of Postgres (all from
//! `/proc/<pid>/stat`), and at the end each service's peak RSS and, for our binary, how many
//! lookups one Postgres query answered on average at each concurrency (from its `/metrics`).
//!
//! Environment: `BENCH_CONCURRENCY` (`1,16,64`), `BENCH_ROUNDS` (3 slices per target and
//! concurrency), `BENCH_SLICE_SECONDS` (2), `BENCH_WARMUP_SECONDS` (3 per target at
//! concurrency 16 before anything is measured, so that Node's JIT has compiled the hot path),
//! `BENCH_TARGETS` (`ours,nest,lapin,amqplib`), `BENCH_OURS_ENV` (extra variables for our
//! binary, e.g. `RUST_LOG=warn,TOKIO_WORKER_THREADS=1`); `BENCH_BASELINE_BIN` names another
//! user-service binary, run as the target `baseline` (a copy of an earlier build, to measure
//! a change in the same run); the target `variant` is our binary again with the variables of
//! `BENCH_VARIANT_ENV` (to measure a setting in the same run); `BENCH_ECHO_PREFETCH` (128) is
//! the echo servers' prefetch, `BENCH_ECHO_WORKERS` (1) the lapin echo's tokio workers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::HashMap,
    process::Stdio,
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
use shared::topology;
use tests::{BrokerProbe, ServiceEnv, TestDb, process::OsProcess, unique};
use tokio::{process::Command, sync::oneshot};

/// The echo servers' prefetch, the same as user-service's default (`BENCH_ECHO_PREFETCH`
/// changes it, to compare with our binary run at another `PREFETCH`).
const PREFETCH: u16 = 128;

fn echo_prefetch() -> u16 {
    std::env::var("BENCH_ECHO_PREFETCH").map_or(PREFETCH, |value| value.parse().expect("BENCH_ECHO_PREFETCH: a number"))
}
/// The lapin echo's tokio workers, the same as user-service's default `WORKER_THREADS`
/// (`BENCH_ECHO_WORKERS` changes it; 0: one per CPU).
fn echo_workers() -> usize {
    std::env::var("BENCH_ECHO_WORKERS").map_or(1, |value| value.parse().expect("BENCH_ECHO_WORKERS: a number"))
}

/// How many users the table holds.
const USERS: usize = 1000;
/// Not measured at the start of each slice (connections warm, queues drained).
const SLICE_WARMUP: Duration = Duration::from_millis(300);
/// How long a call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    if std::env::var("BENCH_ROLE").as_deref() == Ok("lapin-echo") {
        return lapin_echo().await;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench targets without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("nest_vs_ours runs under `cargo bench -p user-service --bench nest_vs_ours` only");
        return;
    }
    let settings = Settings::from_env();
    let env = ServiceEnv::new().await;
    let amqp = env.amqp_url().to_owned();
    let ids = seed(env.db()).await;
    let reply_body = sample_reply(env.db(), &ids[0]).await;

    let mut targets = Vec::new();
    for name in &settings.targets {
        let queue = unique(&format!("bench_{name}"));
        let target = match name.as_str() {
            "ours" => Target::ours(&env, &queue, "ours", env!("CARGO_BIN_EXE_user-service")).await,
            "variant" => Target::ours(&env, &queue, "variant", env!("CARGO_BIN_EXE_user-service")).await,
            "baseline" => {
                let binary = std::env::var("BENCH_BASELINE_BIN").expect("the baseline target needs BENCH_BASELINE_BIN");
                Target::ours(&env, &queue, "baseline", &binary).await
            }
            "nest" => Target::nest(&env, &queue).await,
            "lapin" => Target::lapin_echo(&amqp, &queue, &reply_body).await,
            "amqplib" => Target::amqplib_echo(&amqp, &queue, &reply_body).await,
            other => panic!("BENCH_TARGETS: unknown target {other} (ours, nest, lapin, amqplib)"),
        };
        let caller = Caller::start(&amqp, &queue, name).await;
        caller.wait_answering(&ids).await;
        targets.push((target, caller));
    }
    for (target, caller) in &targets {
        let warmup = measure(caller, &ids, 16, settings.warmup, target.pid).await;
        assert_eq!(warmup.failures, 0, "{}: calls failed during the warm-up", target.name);
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "nest_vs_ours: {} round(s) of {:?} slices per target and concurrency, {} CPU(s), load average {}",
        settings.rounds,
        settings.slice,
        std::thread::available_parallelism().map_or(0, usize::from),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!(
        "CPU per request of the target process, of RabbitMQ, of all Postgres processes and of the caller (this \
         process); context switches per request of the target (all its threads).\n"
    );
    println!(
        "| c | target | req/s | p50 | p99 | target CPU | broker CPU | Postgres CPU | caller CPU | target ctx sw |"
    );
    println!("| ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut summary = Vec::new();
    let mut batches = Vec::new();
    for &concurrency in &settings.concurrency {
        let mut totals: Vec<Totals> = targets.iter().map(|_| Totals::default()).collect();
        let mut before = Vec::new();
        for (target, _) in &targets {
            before.push(target.lookups_and_queries().await);
        }
        for round in 0..settings.rounds {
            for turn in 0..targets.len() {
                let index = (turn + round) % targets.len();
                let (target, caller) = &targets[index];
                let slice = measure(caller, &ids, concurrency, settings.slice, target.pid).await;
                totals[index].add(slice);
            }
        }
        for ((target, _), totals) in targets.iter().zip(&totals) {
            let result = totals.result();
            println!(
                "| {concurrency} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} |",
                target.name,
                result.per_second,
                ms(result.p50),
                ms(result.p99),
                us(result.target_cpu),
                us(result.broker_cpu),
                us(result.postgres_cpu),
                us(result.caller_cpu),
                result.switches,
            );
            if totals.failures > 0 {
                println!("|  | {} | {} failed calls |  |  |  |  |  |  |  |", target.name, totals.failures);
            }
            summary.push((concurrency, target.name.clone(), result));
        }
        for ((target, _), before) in targets.iter().zip(before) {
            if let (Some((lookups, queries)), Some((lookups_after, queries_after))) =
                (before, target.lookups_and_queries().await)
            {
                let batch = (lookups_after - lookups) / (queries_after - queries).max(1.0);
                batches.push(format!("{} at c={concurrency}: {batch:.1}", target.name));
            }
        }
    }
    print_ratios(&summary);
    if !batches.is_empty() {
        println!(
            "\nget_user lookups per Postgres query (user_lookups_total / user_lookup_queries_total): {}",
            batches.join(", ")
        );
    }
    println!();
    for (target, _) in &targets {
        println!("peak RSS of {}: {:.1} MiB", target.name, peak_rss_kib(target.pid) as f64 / 1024.0);
    }

    let queues: Vec<String> = targets.iter().map(|(_, caller)| caller.queue.to_string()).collect();
    for (target, caller) in targets {
        caller.connection.close(200, "bench done".into()).await.ok();
        target.stop().await;
    }
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    BrokerProbe::connect(&amqp).await.delete_queues(&queues).await;
    env.finish().await;
}

struct Settings {
    slice: Duration,
    warmup: Duration,
    rounds: usize,
    concurrency: Vec<usize>,
    targets: Vec<String>,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        let list = |name: &str, default: &str| -> Vec<String> {
            var(name).unwrap_or_else(|| default.to_owned()).split(',').map(|item| item.trim().to_owned()).collect()
        };
        Self {
            slice: Duration::from_secs_f64(var("BENCH_SLICE_SECONDS").and_then(|v| v.parse().ok()).unwrap_or(2.0)),
            warmup: Duration::from_secs_f64(var("BENCH_WARMUP_SECONDS").and_then(|v| v.parse().ok()).unwrap_or(3.0)),
            rounds: var("BENCH_ROUNDS").and_then(|v| v.parse().ok()).unwrap_or(3),
            concurrency: list("BENCH_CONCURRENCY", "1,16,64")
                .iter()
                .map(|n| n.parse().expect("BENCH_CONCURRENCY"))
                .collect(),
            targets: list("BENCH_TARGETS", "ours,nest,lapin,amqplib"),
        }
    }
}

/// Ours/NestJS and ours/raw lapin, the issue's targets, from this run.
fn print_ratios(summary: &[(usize, String, Sample)]) {
    let find = |c: usize, name: &str| summary.iter().find(|(cc, n, _)| *cc == c && n == name).map(|(_, _, s)| s);
    println!();
    for (c, _, ours) in summary.iter().filter(|(_, name, _)| name == "ours") {
        let mut line = format!("c={c}: ours");
        if let Some(nest) = find(*c, "nest") {
            line += &format!(
                " | p50 {:.2}× NestJS's | req/s {:.2}× NestJS's",
                ours.p50.as_secs_f64() / nest.p50.as_secs_f64(),
                ours.per_second / nest.per_second
            );
        }
        if let Some(lapin) = find(*c, "lapin echo") {
            line += &format!(" | req/s {:.0} % of raw lapin", 100.0 * ours.per_second / lapin.per_second);
        }
        if let (Some(lapin), Some(amqplib)) = (find(*c, "lapin echo"), find(*c, "amqplib echo")) {
            line += &format!(" | raw lapin {:.0} % of raw amqplib", 100.0 * lapin.per_second / amqplib.per_second);
        }
        println!("{line}");
    }
}

/// A service under test: an OS process consuming its own queue.
struct Target {
    name: String,
    pid: u32,
    process: OsProcess,
    /// Our binary's ops port, where `/metrics` counts its lookups and queries.
    ops: Option<String>,
    _log_dir: tests::process::ScratchDir,
}

impl Target {
    fn spawn(name: &str, mut command: Command) -> Target {
        let log_dir = tests::process::ScratchDir::new("nest_vs_ours");
        let log = log_dir.path().join(format!("{}.log", name.replace(' ', "_")));
        command.stdin(Stdio::piped());
        let process = OsProcess::spawn(name, command, &log).unwrap_or_else(|error| panic!("{name}: {error}"));
        Target { name: name.to_owned(), pid: process.pid(), process, ops: None, _log_dir: log_dir }
    }

    /// The real binary (built for this bench by cargo) with the service's defaults.
    async fn ours(env: &ServiceEnv, queue: &str, name: &str, binary: &str) -> Target {
        let mut command = Command::new(binary);
        command.env_clear();
        for var in ["AMQP_URL", "DATABASE_URL", "USER_EVENTS_QUEUE", "EVENTS_EXCHANGE"] {
            command.env(var, env.lookup(var).unwrap());
        }
        let ops = format!("127.0.0.1:{}", tests::process::free_port());
        command.env("USER_QUEUE", queue).env("OPS_ADDR", &ops);
        let extra = if name == "variant" { "BENCH_VARIANT_ENV" } else { "BENCH_OURS_ENV" };
        for pair in std::env::var(extra).unwrap_or_default().split(',').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or_else(|| panic!("{extra}: NAME=value,…"));
            command.env(name, value);
        }
        Target { ops: Some(ops), ..Target::spawn(name, command) }
    }

    /// Our binary's `user_lookups_total` and `user_lookup_queries_total` now (`None` for the
    /// other targets, or a build without them).
    async fn lookups_and_queries(&self) -> Option<(f64, f64)> {
        let metrics = reqwest::get(format!("http://{}/metrics", self.ops.as_ref()?)).await.ok()?.text().await.ok()?;
        let value = |name: &str| {
            metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        };
        Some((value("user_lookups_total")?, value("user_lookup_queries_total")?))
    }

    async fn nest(env: &ServiceEnv, queue: &str) -> Target {
        Target::spawn("nest", node("nest-user-service.js", env.amqp_url(), queue, Some(&env.db().url)).await)
    }

    async fn amqplib_echo(amqp: &str, queue: &str, reply: &[u8]) -> Target {
        let mut command = node("amqplib-echo.js", amqp, queue, None).await;
        command.env("REPLY_BODY", String::from_utf8_lossy(reply).as_ref()).env("PREFETCH", echo_prefetch().to_string());
        Target::spawn("amqplib echo", command)
    }

    async fn lapin_echo(amqp: &str, queue: &str, reply: &[u8]) -> Target {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env("BENCH_ROLE", "lapin-echo")
            .env("AMQP_URL", amqp)
            .env("QUEUE", queue)
            .env("REPLY_BODY", String::from_utf8_lossy(reply).as_ref());
        // The same runtime size as user-service's default WORKER_THREADS; 0 is tokio's
        // default (one worker per CPU).
        match echo_workers() {
            0 => command.env_remove("TOKIO_WORKER_THREADS"),
            workers => command.env("TOKIO_WORKER_THREADS", workers.to_string()),
        };
        Target::spawn("lapin echo", command)
    }

    async fn stop(self) {
        self.process.kill().await;
    }
}

/// `node <script>` in tests/nest (installed first), with the queue and broker in its environment.
async fn node(script: &str, amqp: &str, queue: &str, database: Option<&str>) -> Command {
    tests::nest::ensure_ready().await;
    let mut command = Command::new("node");
    command.arg(script).current_dir(tests::nest::nest_dir()).env("AMQP_URL", amqp).env("QUEUE", queue);
    if let Some(database) = database {
        command.env("DATABASE_URL", database);
    }
    command
}

/// Creates the table with user-service's own migrations and fills it.
async fn seed(db: &TestDb) -> Vec<String> {
    let pool = db.pool().await;
    user_service::db::MIGRATOR.run(&pool).await.expect("migrate the bench database");
    sqlx::query(
        "INSERT INTO users (id, email, name, created_at)
         SELECT gen_random_uuid(), 'user' || n || '@example.com', 'User ' || n, now() - n * interval '1 minute'
           FROM generate_series(1, $1) AS n",
    )
    .bind(USERS as i64)
    .execute(&pool)
    .await
    .expect("seed the users");
    sqlx::query_scalar("SELECT id::text FROM users ORDER BY id").fetch_all(&pool).await.expect("read the ids back")
}

/// A reply as get_user sends it, for the echo servers to answer with.
async fn sample_reply(db: &TestDb, id: &str) -> Vec<u8> {
    let pool = db.pool().await;
    let (id, email, name, created_at): (uuid::Uuid, String, String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT id, email, name, created_at FROM users WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("a seeded user");
    shared::wire::encode_success(&shared::contracts::User { id, email, name, created_at }).unwrap()
}

/// The echo server this binary becomes with `BENCH_ROLE=lapin-echo`: every delivery is
/// answered on a task of its own (as the shared server does), then acked.
async fn lapin_echo() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (amqp, queue) = (var("AMQP_URL"), var("QUEUE"));
    let reply: Arc<[u8]> = var("REPLY_BODY").into_bytes().into();
    let connection = connect(&amqp, "bench-lapin-echo").await;
    let channel = connection.create_channel().await.unwrap();
    channel.basic_qos(echo_prefetch(), BasicQosOptions::default()).await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
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
}

async fn connect(amqp: &str, name: &str) -> Connection {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(amqp, properties).await.expect("bench connection")
}

/// The raw caller: one connection and channel publishing NestJS request packets and
/// consuming the replies over direct reply-to, matched to callers by correlation id.
#[derive(Clone)]
struct Caller {
    channel: Channel,
    queue: Arc<str>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>,
    next_id: Arc<AtomicU64>,
    connection: Arc<Connection>,
}

impl Caller {
    async fn start(amqp: &str, queue: &str, name: &str) -> Self {
        let connection = connect(amqp, &format!("bench-caller-{name}")).await;
        let channel = connection.create_channel().await.unwrap();
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut replies =
            channel.basic_consume(topology::REPLY_TO.into(), "".into(), no_ack, FieldTable::default()).await.unwrap();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>> = Arc::default();
        let waiting = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply.properties.correlation_id().as_ref().and_then(|id| id.as_str().parse::<u64>().ok());
                if let Some(caller) = id.and_then(|id| waiting.lock().unwrap().remove(&id)) {
                    // A reply is a success unless it carries an error object.
                    let _ = caller.send(!contains(&reply.data, br#""err""#));
                }
            }
        });
        Self { channel, queue: queue.into(), pending, next_id: Arc::default(), connection: Arc::new(connection) }
    }

    /// One get_user call for `user_id`; whether a successful reply came in time.
    async fn call(&self, user_id: &str) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = format!(r#"{{"pattern":{{"cmd":"get_user"}},"data":{{"id":"{user_id}"}},"id":"{id}"}}"#);
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
                body.as_bytes(),
                properties,
            )
            .await;
        let ok = published.is_ok() && matches!(tokio::time::timeout(CALL_TIMEOUT, reply).await, Ok(Ok(true)));
        if !ok {
            self.pending.lock().unwrap().remove(&id);
        }
        ok
    }

    /// Waits until the target answers a call (it has started and consumes its queue).
    async fn wait_answering(&self, ids: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.call(&ids[0]).await {
            assert!(Instant::now() < deadline, "{} does not answer within 60 s", self.queue);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// What one slice measured.
struct Slice {
    latencies: Vec<Duration>,
    failures: u64,
    elapsed: Duration,
    target_ticks: u64,
    broker_ticks: u64,
    postgres_ticks: u64,
    caller_ticks: u64,
    switches: u64,
}

/// Runs `concurrency` call loops for `length` (after [`SLICE_WARMUP`]), sampling CPU time.
async fn measure(caller: &Caller, ids: &[String], concurrency: usize, length: Duration, pid: u32) -> Slice {
    let started = Instant::now();
    let measure_from = started + SLICE_WARMUP;
    let stop_at = measure_from + length;
    let ids: Arc<[String]> = ids.into();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (caller, ids) = (caller.clone(), Arc::clone(&ids));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut next = worker * 7919;
                loop {
                    let sent = Instant::now();
                    if sent >= stop_at {
                        break;
                    }
                    next = (next + 1) % ids.len();
                    let ok = caller.call(&ids[next]).await;
                    if sent >= measure_from {
                        latencies.push(sent.elapsed());
                        failures += u64::from(!ok);
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSample::take(pid);
    let measured = Instant::now();
    tokio::time::sleep_until(stop_at.into()).await;
    let cpu_after = CpuSample::take(pid);
    let elapsed = measured.elapsed();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mine, failed) = worker.await.expect("a bench worker");
        latencies.extend(mine);
        failures += failed;
    }
    Slice {
        latencies,
        failures,
        elapsed,
        target_ticks: cpu_after.target - cpu_before.target,
        broker_ticks: cpu_after.broker.saturating_sub(cpu_before.broker),
        postgres_ticks: cpu_after.postgres.saturating_sub(cpu_before.postgres),
        caller_ticks: cpu_after.caller - cpu_before.caller,
        switches: cpu_after.switches.saturating_sub(cpu_before.switches),
    }
}

/// The slices of one target at one concurrency, summed.
#[derive(Default)]
struct Totals {
    latencies: Vec<Duration>,
    failures: u64,
    elapsed: Duration,
    target_ticks: u64,
    broker_ticks: u64,
    postgres_ticks: u64,
    caller_ticks: u64,
    switches: u64,
}

struct Sample {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    target_cpu: Duration,
    broker_cpu: Duration,
    postgres_cpu: Duration,
    caller_cpu: Duration,
    /// Context switches of the target per request.
    switches: f64,
}

impl Totals {
    fn add(&mut self, slice: Slice) {
        self.latencies.extend(slice.latencies);
        self.failures += slice.failures;
        self.elapsed += slice.elapsed;
        self.target_ticks += slice.target_ticks;
        self.broker_ticks += slice.broker_ticks;
        self.postgres_ticks += slice.postgres_ticks;
        self.caller_ticks += slice.caller_ticks;
        self.switches += slice.switches;
    }

    fn result(&self) -> Sample {
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies.get(index).copied().unwrap_or_default()
        };
        let calls = latencies.len().max(1) as f64;
        let per_call = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() / calls);
        Sample {
            per_second: latencies.len() as f64 / self.elapsed.as_secs_f64(),
            p50: percentile(0.50),
            p99: percentile(0.99),
            target_cpu: per_call(self.target_ticks),
            broker_cpu: per_call(self.broker_ticks),
            postgres_cpu: per_call(self.postgres_ticks),
            caller_cpu: per_call(self.caller_ticks),
            switches: self.switches as f64 / calls,
        }
    }
}

/// CPU time so far (user + system, in clock ticks) of the target, RabbitMQ, Postgres and this
/// process, and the target's context switches.
struct CpuSample {
    target: u64,
    broker: u64,
    postgres: u64,
    caller: u64,
    switches: u64,
}

impl CpuSample {
    fn take(pid: u32) -> Self {
        let mut broker = 0;
        let mut postgres = 0;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(other) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                    continue;
                };
                match std::fs::read_to_string(entry.path().join("comm")).as_deref().map(str::trim) {
                    Ok("beam.smp") => broker += cpu_ticks(other),
                    Ok(comm) if comm.starts_with("postgres") => postgres += cpu_ticks(other),
                    _ => {}
                }
            }
        }
        Self {
            target: cpu_ticks(pid),
            broker,
            postgres,
            caller: cpu_ticks(std::process::id()),
            switches: switches(pid),
        }
    }
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: count fields after its closing parenthesis.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
    // After the name, field 3 (state) is index 0, so utime (14) is index 11 and stime (15) 12.
    field(11) + field(12)
}

/// Voluntary and involuntary context switches of all threads of a process.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `VmHWM` of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    // USER_HZ: 100 on every Linux architecture this runs on (sysconf(_SC_CLK_TCK)).
    100.0
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}
