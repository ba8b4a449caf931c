//! The built binary under SIGTERM and SIGINT, as an orchestrator stops it: it stops consuming
//! (a request sent afterwards waits in the queue for the next instance), closes its broker
//! connection and exits 0 within the grace period.

use std::time::Duration;

use serde_json::json;
use tests::ServiceEnv;

async fn stops_cleanly_on(signal: &str) {
    let env = ServiceEnv::new().await;
    let extra = [("SHUTDOWN_GRACE_MS", "5000")];
    let binary = crate::binary::start(&env, &extra).await;
    let queue = env.user_queue().to_owned();
    let probe = tests::BrokerProbe::connect(env.amqp_url()).await;
    tests::cli::assert_stops_cleanly_on(binary, signal).await;
    // Nobody consumes its queue any more: a request sent now waits there for the next instance.
    let request = json!({"pattern": {"cmd": "get_user"}, "data": {"id": uuid::Uuid::new_v4()}, "id": "after-stop"});
    probe.publish_raw("", &queue, request.to_string().as_bytes(), lapin::BasicProperties::default()).await;
    tests::eventually(Duration::from_secs(2), || async {
        match probe.message_count(&queue).await {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    probe.get(&queue).await;
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
