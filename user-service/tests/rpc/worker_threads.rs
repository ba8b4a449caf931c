//! `WORKER_THREADS` sizes the built binary's runtime: one worker by default, as many as asked
//! otherwise, as the runtime itself reports it on `/metrics` (`runtime_worker_threads`).

use tests::{ServiceEnv, cli::RunningBinary};

/// The value of `runtime_worker_threads` on the binary's `/metrics`.
async fn workers(binary: &RunningBinary) -> String {
    let metrics = reqwest::get(format!("http://{}/metrics", binary.addr)).await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|line| line.starts_with("runtime_worker_threads "));
    line.unwrap_or_else(|| panic!("no runtime_worker_threads in {metrics}")).split(' ').nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_one_worker_by_default_and_as_many_as_worker_threads_asks() {
    let env = ServiceEnv::new().await;
    let default = crate::binary::start(&env, &[]).await;
    let three = crate::binary::start(&env, &[("WORKER_THREADS", "3")]).await;
    assert_eq!(workers(&default).await, "1", "default WORKER_THREADS");
    assert_eq!(workers(&three).await, "3", "WORKER_THREADS=3");
    default.process.kill().await;
    three.process.kill().await;
}
