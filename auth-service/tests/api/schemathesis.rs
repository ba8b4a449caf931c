//! The OpenAPI document is exact: schemathesis, with all its checks, against the running
//! service (real Postgres and RabbitMQ, a stub user-service on the broker) finds no failure:
//! no 5xx, no response outside the document, no schema-valid request rejected, no invalid one
//! accepted.

use std::process::Stdio;

use reqwest::StatusCode;

use crate::{test_app::TestApp, user_service_stub::UserServiceStub};

/// Test cases per operation and phase: enough to find contract drift, few enough for CI.
const MAX_EXAMPLES: &str = "40";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_against_the_openapi_document() {
    let schemathesis = tests::schemathesis::ensure_ready().await;
    // Limits out of the fuzzer's way: they are tested on their own.
    let app = TestApp::spawn_with(|env| {
        env.set("LOGIN_FAILURES_PER_ACCOUNT", "100000").set("LOGIN_FAILURES_PER_IP", "100000")
    })
    .await;
    let stub = UserServiceStub::start(app.broker_url(), app.user_queue()).await;
    app.wait_ready(StatusCode::OK).await;
    let (user, token) = app.user_with_token("fuzz@example.com").await;
    stub.directory.add_json(&user);

    let report = tempdir();
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES, "--workers", "1", "--seed", "20261130"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(&report)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");

    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found failures ({}):\n{text}", output.status);
    assert!(text.contains("passed"), "schemathesis ran no test case:\n{text}");
    let _ = std::fs::remove_dir_all(&report);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("auth-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
