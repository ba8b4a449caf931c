//! The ops port: liveness, readiness, metrics and the `healthcheck` probe.

use shared::ops;
use tests::DEADLINE;
use uuid::Uuid;

use crate::support::{TestApp, created, http_status, metrics_text, new_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_200_when_all_is_up() {
    let app = TestApp::spawn().await;

    assert_eq!(http_status(&app.ops_url("/healthz")).await.0, 200);
    let (status, body) = http_status(&app.ops_url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"], serde_json::json!({"database": "up", "broker": "up"}));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_outcome_and_projected_events() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.emit(&created(&user), &Uuid::new_v4().to_string()).await;
    tests::eventually(DEADLINE, || app.get_user(user.id)).await;
    let _not_found = app.get_user(Uuid::new_v4()).await;

    // Counts are recorded after the reply or the commit, so they may trail what the test saw.
    let ours = |metrics: &str, outcome: &str| {
        metrics.lines().any(|line| {
            line.starts_with("transport_messages_total{")
                && line.contains(&format!("queue=\"{}\"", app.queue))
                && line.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    let metrics = tests::eventually(DEADLINE, || async {
        let metrics = metrics_text(&app).await;
        let projected = metrics.contains("users_projected_total{outcome=\"applied\"}");
        if ours(&metrics, "ok") && ours(&metrics, "rejected") && projected { Ok(metrics) } else { Err(metrics) }
    })
    .await;
    assert!(metrics.contains("transport_handler_duration_seconds_bucket{"), "{metrics}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_probe_follows_the_ops_port() {
    let mut app = TestApp::spawn().await;
    assert!(ops::healthcheck(app.ops_addr).await);

    app.stop().await;
    assert!(!ops::healthcheck(app.ops_addr).await);
    app.finish().await;
}
