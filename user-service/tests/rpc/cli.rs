//! The binary explains itself: `--help` and `--version`, configuration errors (exit code 2),
//! deprecated names, and a `healthcheck` that reads `OPS_ADDR` alone.

use std::process::Output;

use tokio::process::Command;

use crate::support::TestApp;

/// Every setting of the README's table, with its default.
const SETTINGS: [(&str, &str); 17] = [
    ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("AMQP_RECONNECT_MAX_MS", "10000"),
    ("EVENTS_EXCHANGE", "events"),
    ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/users"),
    ("DATABASE_MAX_CONNECTIONS", "16"),
    ("DATABASE_TIMEOUT_MS", "2000"),
    ("OPS_ADDR", "0.0.0.0:9090"),
    ("SHUTDOWN_GRACE_MS", "10000"),
    ("PREFETCH", "32"),
    ("RETRY_MAX_ATTEMPTS", "5"),
    ("RETRY_INITIAL_DELAY_MS", "1000"),
    ("RETRY_MULTIPLIER", "5"),
    ("RETRY_MAX_DELAY_MS", "60000"),
    ("LOG_FORMAT", "pretty"),
    ("RUST_LOG", "info"),
    ("USER_QUEUE", "user_queue"),
    ("USER_EVENTS_QUEUE", "user_events_queue"),
];

/// Runs the built binary with `args` and nothing but `vars` in its environment.
async fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .await
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_its_default_and_a_meaning() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    assert!(help.starts_with(user_service::SERVICE.about), "{help}");
    // clap prints one paragraph per option: flag, meaning, variable, default.
    for (var, default) in SETTINGS {
        let entry = help.split("\n\n").find(|entry| entry.contains(&format!("[env: {var}")));
        let entry = entry.unwrap_or_else(|| panic!("{var} missing from:\n{help}"));
        assert!(entry.contains(&format!("[default: {default}]")), "{var} without its default: {entry}");
        assert!(entry.lines().nth(1).is_some_and(|meaning| !meaning.trim().is_empty()), "{var}: {entry}");
    }
    assert!(help.contains("healthcheck"), "{help}");
}

#[tokio::test]
async fn version_prints_the_package_version() {
    let output = run(&["--version"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), format!("user-service {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn an_invalid_setting_stops_the_start_with_exit_code_2_naming_it() {
    let output = run(&[], &[("PREFETCH", "many")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("PREFETCH=\"many\" is invalid"), "{error}");
}

#[tokio::test]
async fn the_deprecated_pool_size_variable_still_sets_the_connections() {
    // Zero is rejected: the error proves the old name was read as the new setting.
    let output = run(&[], &[("DATABASE_POOL_SIZE", "0")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("DATABASE_MAX_CONNECTIONS=\"0\" is invalid"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_ignores_unrelated_bad_settings_and_follows_the_ops_port() {
    let mut app = TestApp::spawn().await;
    let ops_addr = app.ops_addr.to_string();
    let vars = [("OPS_ADDR", ops_addr.as_str()), ("PREFETCH", "many"), ("DATABASE_URL", "not a url")];

    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(0));
    app.stop().await;
    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(1));
    app.finish().await;
}
