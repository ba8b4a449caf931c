//! Untrusted strings are escaped in the human-readable log: a client cannot forge a log line.

use reqwest::StatusCode;
use serde_json::json;
use tests::{DEADLINE, ServiceEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_a_newline_is_escaped_in_the_pretty_log() {
    let env = ServiceEnv::new().await;
    let crate::binary::Binary { process, http, log, dir: _dir } =
        crate::binary::start(&env, &[("LOG_FORMAT", "pretty"), ("LOGIN_FAILURES_PER_ACCOUNT", "1")]).await;
    let client = reqwest::Client::new();

    let forged = "mallory\u{7}@example.com\n2026-01-01T00:00:00Z  INFO forged: login succeeded";
    let body = json!({"email": forged, "password": "wrong password"});
    let login = || client.post(format!("http://{http}/auth/login")).json(&body).send();
    assert_eq!(login().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "throttled, and logged");

    let text = tests::eventually(DEADLINE, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("failed logins throttled") { Ok(text) } else { Err(text) }
    })
    .await;
    let line = text.lines().find(|line| line.contains("failed logins throttled")).unwrap();
    assert!(line.contains(r"mallory\u{7}@example.com\n2026-01-01T00:00:00Z  INFO forged"), "escaped in place: {line}");
    assert!(!text.lines().any(|line| line.starts_with("2026-01-01T00:00:00Z")), "a forged line:\n{text}");
    assert!(!text.contains('\u{7}'), "a raw control character reached the log");
    process.kill().await;
    env.finish().await;
}
