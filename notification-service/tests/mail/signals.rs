//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops
//! consuming, closes its links and exits 0 within the grace period.

use tests::{ServiceEnv, smtp::SmtpSink};

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let smtp = SmtpSink::start().await;
    let smtp_url = smtp.url();
    let binary = crate::binary::start(&env, &smtp_url, &[]).await;
    tests::cli::assert_stops_cleanly_on(binary, signal).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_cleanly_with_exit_code_0() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_binary_cleanly_with_exit_code_0() {
    stops_cleanly_on("INT").await;
}
