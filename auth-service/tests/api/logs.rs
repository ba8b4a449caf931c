//! Untrusted strings are escaped in the human-readable log: a client cannot forge a log line.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::json;
use tests::{
    DEADLINE, ServiceEnv,
    process::{OsProcess, ScratchDir, free_port},
};

use crate::test_app::JWT_SECRET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_a_newline_is_escaped_in_the_pretty_log() {
    let env = ServiceEnv::new().await;
    let dir = ScratchDir::new("auth-logs");
    let log = dir.path().join("auth-service.log");
    let (http, ops) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-service"));
    command.env_clear().stdin(Stdio::null());
    for var in ["AMQP_URL", "DATABASE_URL", "USER_QUEUE", "EVENTS_EXCHANGE"] {
        command.env(var, env.lookup(var).unwrap());
    }
    command
        .env("JWT_SECRET", JWT_SECRET)
        .env("HTTP_ADDR", &http)
        .env("OPS_ADDR", &ops)
        .env("LOG_FORMAT", "pretty")
        .env("ARGON2_M_COST", "1024")
        .env("ARGON2_T_COST", "1")
        .env("LOGIN_FAILURES_PER_ACCOUNT", "1");
    let process = OsProcess::spawn("auth-service", command, &log).unwrap();
    let client = reqwest::Client::new();
    tests::eventually(DEADLINE, || async {
        let response = client.get(format!("http://{ops}/readyz")).send().await.map_err(|e| e.to_string())?;
        if response.status() == StatusCode::OK { Ok(()) } else { Err(response.status().to_string()) }
    })
    .await;

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
