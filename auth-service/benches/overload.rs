//! Overload: a burst of 10× the hashing capacity against a running auth-service.
//!
//! `cargo bench -p auth-service --bench overload` (Postgres and RabbitMQ as for the tests).
//! The service runs in-process (`App::build`, as `main` does) with its defaults (argon2id at
//! OWASP cost, `HASH_CONCURRENCY=auto`, `HASH_QUEUE_CAPACITY=auto`) on a fresh database. In
//! the same run it measures:
//! - **unloaded**: `BENCH_UNLOADED` (default 30) sequential signups: p50 and p99;
//! - **burst** (`BENCH_ROUNDS`, default 3): 10 × (hashing threads + queue) signups fired at
//!   once: how many were accepted (201) and shed (503 with `Retry-After`), the accepted ones'
//!   p50 and p99 (and p99 over the unloaded p99), the slowest shed answer, and the peak RSS of
//!   the process during the burst (`VmHWM`, reset before each burst).
//!
//! Everything shares the machine's cores: the load generator, the service, Postgres, RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use auth_service::{App, Config, config::QueueCapacity};
use futures::future::join_all;
use serde_json::json;
use shared::CancellationToken;
use tests::ServiceEnv;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

fn var(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

async fn run() {
    let unloaded_count = var("BENCH_UNLOADED", 30);
    let rounds = var("BENCH_ROUNDS", 3);
    let env = ServiceEnv::new()
        .await
        .set("JWT_SECRET", "bench-secret-bench-secret-bench-secret!")
        .set("RATE_LIMIT_PER_SECOND", "100000")
        .set("RATE_LIMIT_BURST", "100000");
    let config = Config::from_lookup(|name| env.lookup(name).or_else(|| std::env::var(name).ok())).unwrap();
    let threads = config.hash_concurrency;
    let queue = config.overload.hash_queue_capacity.resolve(threads);
    let capacity = threads + queue;
    let burst = 10 * capacity;
    let auto = config.overload.hash_queue_capacity == QueueCapacity::Auto;
    let params = config.argon2;
    let shutdown = CancellationToken::new();
    let app = App::build(config, shutdown.clone()).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder().pool_max_idle_per_host(burst).build().unwrap();

    let signup = |client: reqwest::Client, base: String| async move {
        let email = format!("bench-{}@example.com", Uuid::new_v4().simple());
        let body = json!({"email": email, "password": PASSWORD, "name": "Bench"});
        let started = Instant::now();
        let response = client.post(format!("{base}/auth/signup")).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let _ = response.bytes().await;
        (status, started.elapsed(), retry_after)
    };

    // Warm-up (connections, the pool, the first statement), then the unloaded baseline.
    for _ in 0..3 {
        signup(client.clone(), base.clone()).await;
    }
    let mut unloaded = Vec::new();
    for _ in 0..unloaded_count {
        let (status, took, _) = signup(client.clone(), base.clone()).await;
        assert_eq!(status, 201);
        unloaded.push(took);
    }
    unloaded.sort();
    let (unloaded_p50, unloaded_p99) = (percentile(&unloaded, 0.50), percentile(&unloaded, 0.99));

    println!(
        "\n### Burst of 10× the hashing capacity (argon2id m={} KiB, t={}, p={}; {threads} hashing thread(s) + queue {queue}{} = capacity {capacity}; burst {burst})\n",
        params.m_cost,
        params.t_cost,
        params.p_cost,
        if auto { " (auto)" } else { "" },
    );
    println!(
        "Unloaded ({unloaded_count} sequential signups): p50 {:.1} ms, p99 {:.1} ms.\n",
        ms(unloaded_p50),
        ms(unloaded_p99)
    );
    println!(
        "| round | accepted (201) | shed (503) | other | accepted p50 ms | accepted p99 ms | p99 / unloaded p99 | slowest shed ms | shed without Retry-After | peak RSS MiB (before → during) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for round in 1..=rounds {
        let rss_before = rss_kib("VmRSS");
        reset_peak_rss();
        let results = join_all((0..burst).map(|_| signup(client.clone(), base.clone()))).await;
        let peak = rss_kib("VmHWM");
        let mut accepted: Vec<Duration> = Vec::new();
        let (mut shed, mut other, mut slowest_shed, mut without_retry_after) = (0, 0, Duration::ZERO, 0);
        for (status, took, retry_after) in results {
            match status {
                201 => accepted.push(took),
                503 => {
                    shed += 1;
                    slowest_shed = slowest_shed.max(took);
                    without_retry_after += usize::from(!retry_after);
                }
                _ => other += 1,
            }
        }
        accepted.sort();
        let (p50, p99) = (percentile(&accepted, 0.50), percentile(&accepted, 0.99));
        println!(
            "| {round} | {} | {shed} | {other} | {:.1} | {:.1} | {:.1}× | {:.1} | {without_retry_after} | {:.0} → {:.0} |",
            accepted.len(),
            ms(p50),
            ms(p99),
            p99.as_secs_f64() / unloaded_p99.as_secs_f64(),
            ms(slowest_shed),
            rss_before as f64 / 1024.0,
            peak as f64 / 1024.0,
        );
    }
    println!(
        "\nLoad average (1 min) at the end: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );

    shutdown.cancel();
    running.await.unwrap();
    env.finish().await;
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), 0 where there is no such file.
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux: `5` into `/proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
