//! Signup throughput against the raw argon2id hash rate, and `GET /users/{id}` end to end.
//!
//! `cargo bench -p auth-service --bench signup` (Postgres and RabbitMQ as for the tests).
//! `BENCH_SECS` (default 10) sets the length of each measurement; `ARGON2_M_COST`,
//! `ARGON2_T_COST`, `ARGON2_P_COST` override the hash cost (default: the service's OWASP
//! defaults). Everything runs on this machine: the load generator, the service, Postgres and
//! RabbitMQ share its cores with the hashing, which the raw baseline has to itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use auth_service::{App, Config, config::Argon2Params, password};
use chrono::Utc;
use serde_json::{Value, json};
use shared::{
    BrokerConfig, CancellationToken, Listener, RetryPolicy, RpcException, Server, ServerConfig, State,
    contracts::{GetUser, User},
};
use tests::{DEADLINE, ServiceEnv};
use uuid::Uuid;

const SIGNUP_CONCURRENCY: [usize; 3] = [1, 8, 32];
const GET_USER_CONCURRENCY: [usize; 3] = [1, 16, 64];
const PASSWORD: &str = "correct horse battery staple";
/// The length of one slice of an interleaved measurement.
const SLICE: Duration = Duration::from_secs(2);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let window = Duration::from_secs(seconds);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let load_before = load_average();
    let bench = Bench::start().await;
    let params = bench.config.argon2;

    // The raw baseline and the signups are measured in alternating two-second slices, the
    // raw side with as many threads as the service hashes at once at that concurrency (its
    // hasher runs at most `cpus` hashes together), so that both sides of each ratio see the
    // same background load on a shared machine.
    let mut rows = Vec::new();
    for concurrency in SIGNUP_CONCURRENCY {
        let threads = concurrency.min(cpus);
        eprintln!("signup at concurrency {concurrency} against raw argon2id with {threads} thread(s) …");
        let (mut hashes, mut hashing) = (0u64, Duration::ZERO);
        let mut signups = Run::default();
        for _ in 0..(seconds / SLICE.as_secs()).max(1) {
            let (count, took) = tokio::task::spawn_blocking(move || raw_hashes(params, threads, SLICE)).await.unwrap();
            hashes += count;
            hashing += took;
            let slice = bench.load(concurrency, SLICE, |client, base, n| async move {
                let email = format!("bench-{n}-{}@example.com", Uuid::new_v4().simple());
                let body = json!({"email": email, "password": PASSWORD, "name": "Bench"});
                client.post(format!("{base}/auth/signup")).json(&body).send().await.map(|r| r.status().as_u16() == 201)
            });
            signups.absorb(slice.await);
        }
        rows.push((concurrency, signups, threads, hashes as f64 / hashing.as_secs_f64()));
    }

    let (token, user_id) = bench.user_with_token().await;
    let mut reads = Vec::new();
    for concurrency in GET_USER_CONCURRENCY {
        eprintln!("GET /users/{{id}} at concurrency {concurrency} …");
        let token = token.clone();
        let run = bench.load(concurrency, window, move |client, base, _| {
            let token = token.clone();
            async move {
                let response = client.get(format!("{base}/users/{user_id}")).bearer_auth(token).send().await?;
                Ok(response.status().as_u16() == 200)
            }
        });
        reads.push((concurrency, run.await));
    }

    print_report(params, cpus, seconds, &rows, &reads);
    println!("\nLoad average (1 min) before / after: {load_before} / {}", load_average());
    bench.stop().await;
}

/// The 1-minute load average: other work on the machine skews every number here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Hashes done by `threads` threads hashing flat out for `window`, and the time taken.
fn raw_hashes(params: Argon2Params, threads: usize, window: Duration) -> (u64, Duration) {
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut hashes = 0u64;
                while started.elapsed() < window {
                    password::hash_blocking(params, PASSWORD).unwrap();
                    hashes += 1;
                }
                hashes
            })
        })
        .collect();
    let total = workers.into_iter().map(|worker| worker.join().unwrap()).sum();
    (total, started.elapsed())
}

/// The service with a stub user-service, on a database and queue of their own.
struct Bench {
    config: Config,
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    app: Option<App>,
    users: Arc<std::sync::Mutex<HashMap<Uuid, User>>>,
    /// The database and broker names; finished (checked and deleted) by [`Bench::stop`].
    env: ServiceEnv,
}

/// One measured run (or several slices added up).
#[derive(Default)]
struct Run {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn absorb(&mut self, other: Run) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

async fn stub_get_user(
    State(users): State<Arc<std::sync::Mutex<HashMap<Uuid, User>>>>,
    request: GetUser,
) -> Result<User, RpcException> {
    let id = Uuid::parse_str(&request.id).map_err(|_| RpcException::status(400, "invalid user id"))?;
    let user = users.lock().unwrap().get(&id).cloned();
    user.ok_or_else(|| RpcException::status(404, "user not found"))
}

impl Bench {
    async fn start() -> Bench {
        let mut env = ServiceEnv::new()
            .await
            .set("APP_ENV", "dev")
            .set("RATE_LIMIT_PER_SECOND", "1000000")
            .set("RATE_LIMIT_BURST", "1000000");
        for var in ["ARGON2_M_COST", "ARGON2_T_COST", "ARGON2_P_COST"] {
            if let Ok(value) = std::env::var(var) {
                env = env.set(var, value);
            }
        }
        let config = Config::from_lookup(|var| env.lookup(var)).unwrap();
        let shutdown = CancellationToken::new();

        let users = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let mut server_config =
            ServerConfig::new(BrokerConfig::new(env.amqp_url(), "auth-bench-user-service"), "auth-bench-user-service");
        // Requests are never retried: no delay queues, only the dead-letter queue the env deletes.
        server_config.retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
        let handle = Server::new(Arc::clone(&users))
            .request(stub_get_user)
            .listen(Listener::queue(env.user_queue()))
            .start(server_config, shutdown.clone());
        assert!(handle.wait_ready(DEADLINE).await);

        let app = App::build(config.clone(), shutdown.clone()).await.unwrap();
        let base = format!("http://{}", app.http_addr());
        let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
        let bench = Bench { config, base, client, shutdown, app: Some(app), users, env };
        tests::eventually(DEADLINE, || async {
            let status = bench.client.get(format!("{}/readyz", bench.base)).send().await.map(|r| r.status().as_u16());
            if matches!(status, Ok(200)) { Ok(()) } else { Err(format!("{status:?}")) }
        })
        .await;
        bench
    }

    /// A user the stub knows, and a token to read it with.
    async fn user_with_token(&self) -> (String, Uuid) {
        let email = format!("reader-{}@example.com", Uuid::new_v4().simple());
        let body = json!({"email": email, "password": PASSWORD, "name": "Reader"});
        let user: Value = self
            .client
            .post(format!("{}/auth/signup", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id: Uuid = user["id"].as_str().unwrap().parse().unwrap();
        self.users
            .lock()
            .unwrap()
            .insert(id, User { id, email: email.clone(), name: "Reader".into(), created_at: Utc::now() });
        let login = json!({"email": email, "password": PASSWORD});
        let token: Value = self
            .client
            .post(format!("{}/auth/login", self.base))
            .json(&login)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (token["accessToken"].as_str().unwrap().to_owned(), id)
    }

    /// Runs `concurrency` workers calling `request` back to back for `window`.
    async fn load<F, Fut>(&self, concurrency: usize, window: Duration, request: F) -> Run
    where
        F: Fn(reqwest::Client, String, usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<bool, reqwest::Error>> + Send,
    {
        let counter = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, base, request, counter, stop) =
                    (self.client.clone(), self.base.clone(), request.clone(), counter.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let sent = Instant::now();
                        match request(client.clone(), base.clone(), n).await {
                            Ok(true) => {
                                ok += 1;
                                latencies.push(sent.elapsed());
                            }
                            _ => failed += 1,
                        }
                    }
                    (ok, failed, latencies)
                })
            })
            .collect();
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::Relaxed);
        let mut run = Run { ok: 0, failed: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
        for worker in workers {
            let (ok, failed, latencies) = worker.await.unwrap();
            run.ok += ok;
            run.failed += failed;
            run.latencies.extend(latencies);
        }
        // Requests finishing after the window count, so the window ends with the last one.
        run.elapsed = started.elapsed();
        run.latencies.sort();
        run
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            app.run_until_stopped().await;
        }
        self.env.finish().await;
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

fn print_report(
    params: Argon2Params,
    cpus: usize,
    seconds: u64,
    signups: &[(usize, Run, usize, f64)],
    reads: &[(usize, Run)],
) {
    println!(
        "### `POST /auth/signup` vs raw argon2id (m={} KiB, t={}, p={}; {cpus} CPUs; signups and raw hashing {seconds} s each per row, interleaved in 2 s slices; GET runs {seconds} s)\n",
        params.m_cost, params.t_cost, params.p_cost
    );
    println!("| concurrency | signups/s | p50 ms | p99 ms | failed | raw hashes/s (threads) | signups / raw |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (concurrency, run, threads, raw) in signups {
        println!(
            "| {concurrency} | {:.1} | {} | {} | {} | {raw:.1} ({threads}) | {:.0} % |",
            run.rate(),
            ms(run.percentile(0.5)),
            ms(run.percentile(0.99)),
            run.failed,
            100.0 * run.rate() / raw
        );
    }
    println!("\n### `GET /users/{{id}}` end to end (HTTP → auth-service → RabbitMQ → stub user-service → reply)\n");
    println!("| concurrency | requests/s | p50 ms | p99 ms | failed |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (concurrency, run) in reads {
        println!(
            "| {concurrency} | {:.0} | {} | {} | {} |",
            run.rate(),
            ms(run.percentile(0.5)),
            ms(run.percentile(0.99)),
            run.failed
        );
    }
}
