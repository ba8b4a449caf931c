//! The ops port: liveness, readiness that follows the SMTP server, and the mail metric.

use serde_json::Value;

use tests::DEADLINE;

use crate::support::{TestApp, event_id, http_get, user};

#[tokio::test]
async fn readiness_follows_the_smtp_server_and_metrics_count_mails() {
    let mut t = TestApp::spawn().await;
    let ops = t.app.ops_addr();

    assert_eq!(http_get(ops, "/healthz").await.0, 200);
    let (status, body) = http_get(ops, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let checks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checks["checks"], serde_json::json!({"database": "up", "broker": "up", "smtp": "up"}));

    t.emit(&user("Ada", "ada@example.com"), &event_id()).await;
    t.wait_handled("ok", 1).await;
    let (_, metrics) = http_get(ops, "/metrics").await;
    assert!(metrics.contains("welcome_mails_total{outcome=\"sent\"}"), "{metrics}");

    t.sink.stop().await;
    tests::eventually(DEADLINE, || async {
        let (status, body) = http_get(ops, "/readyz").await;
        if status == 503 && body.contains(r#""smtp":"down""#) { Ok(()) } else { Err(format!("{status} {body}")) }
    })
    .await;
    assert_eq!(http_get(ops, "/healthz").await.0, 200, "liveness does not depend on SMTP");

    t.sink.restart().await;
    tests::eventually(DEADLINE, || async {
        let (status, body) = http_get(ops, "/readyz").await;
        if status == 200 { Ok(()) } else { Err(format!("{status} {body}")) }
    })
    .await;
    t.stop().await;
}
