//! The binary explains itself: `--help` and `--version`, configuration errors, the deprecated
//! pool size name, and a `healthcheck` that reads `HTTP_ADDR` alone.

use std::process::Output;

use tokio::process::Command;

use crate::test_app::TestApp;

/// Every setting of the README's table, with its default (`JWT_SECRET` has none).
const SETTINGS: [(&str, Option<&str>); 25] = [
    ("HTTP_ADDR", Some("0.0.0.0:3000")),
    ("APP_ENV", Some("production")),
    ("JWT_SECRET", None),
    ("JWT_TTL_SECS", Some("900")),
    ("RPC_TIMEOUT_MS", Some("5000")),
    ("USER_QUEUE", Some("user_queue")),
    ("RATE_LIMIT_PER_SECOND", Some("5")),
    ("RATE_LIMIT_BURST", Some("10")),
    ("ARGON2_M_COST", Some("19456")),
    ("ARGON2_T_COST", Some("2")),
    ("ARGON2_P_COST", Some("1")),
    ("HASH_CONCURRENCY", Some("auto")),
    ("BODY_LIMIT_BYTES", Some("16384")),
    ("OUTBOX_BATCH_SIZE", Some("100")),
    ("OUTBOX_POLL_MS", Some("5000")),
    ("AMQP_URL", Some("amqp://guest:guest@127.0.0.1:5672/%2f")),
    ("AMQP_SHUFFLE_URLS", Some("true")),
    ("AMQP_QUEUE_TYPE", Some("classic")),
    ("AMQP_RECONNECT_MAX_MS", Some("10000")),
    ("EVENTS_EXCHANGE", Some("events")),
    ("DATABASE_URL", Some("postgres://postgres@127.0.0.1:5432/auth")),
    ("DATABASE_MAX_CONNECTIONS", Some("10")),
    ("DATABASE_TIMEOUT_MS", Some("5000")),
    ("LOG_FORMAT", Some("pretty")),
    ("RUST_LOG", Some("info")),
];

/// Runs the built binary with `args` and nothing but `vars` in its environment.
async fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth-service"))
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

/// The options of a help text, one string each (clap prints an option on one line, or as a
/// paragraph when the help is long).
fn options(help: &str) -> Vec<String> {
    let mut options: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with("-h,") || trimmed.starts_with("-V,") {
            options.push(String::new());
        }
        if let Some(option) = options.last_mut() {
            option.push_str(trimmed);
            option.push('\n');
        }
    }
    options
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_its_default_and_a_meaning() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    assert!(help.starts_with(auth_service::SERVICE.about), "{help}");
    let options = options(&help);
    for (var, default) in SETTINGS {
        let option = options
            .iter()
            .find(|option| option.contains(&format!("[env: {var}=")) || option.contains(&format!("[env: {var}]")));
        let option = option.unwrap_or_else(|| panic!("{var} missing from:\n{help}"));
        if let Some(default) = default {
            assert!(option.contains(&format!("[default: {default}]")), "{var} without its default: {option}");
        }
        let meaning = option.split_once('>').map_or("", |(_, rest)| rest).split("[env:").next().unwrap_or("");
        assert!(meaning.trim().len() > 10, "{var} without a meaning: {option}");
    }
    assert!(help.contains("healthcheck"), "{help}");
    assert!(help.contains("_FILE"), "the file variants of secrets are explained: {help}");
}

#[tokio::test]
async fn version_prints_the_package_version() {
    let output = run(&["--version"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), format!("auth-service {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn an_invalid_setting_stops_the_start_with_exit_code_2_naming_it() {
    let output = run(&[], &[("APP_ENV", "dev"), ("RATE_LIMIT_BURST", "0")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("RATE_LIMIT_BURST=\"0\" is invalid"), "{error}");
}

#[tokio::test]
async fn without_a_jwt_key_outside_dev_the_service_does_not_start_and_says_why() {
    let output = run(&[], &[("JWT_SECRET", "too short, and a secret")]).await;
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(said.contains("JWT_SECRET=(hidden) is invalid: must be at least 32 bytes"), "{said}");
    assert!(!said.contains("too short, and a secret"), "the key is never shown: {said}");

    let output = run(&[], &[]).await;
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(said.contains("JWT_SECRET is required"), "{said}");
}

#[tokio::test]
async fn the_deprecated_pool_size_variable_still_sets_the_connections() {
    // Zero is rejected: the error proves the old name was read as the new setting.
    let output = run(&[], &[("APP_ENV", "dev"), ("DB_MAX_CONNECTIONS", "0")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("DATABASE_MAX_CONNECTIONS=\"0\" is invalid"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_ignores_unrelated_bad_settings_and_follows_the_http_port() {
    let mut app = TestApp::spawn().await;
    let http_addr = app.addr.to_string();
    let vars = [("HTTP_ADDR", http_addr.as_str()), ("RATE_LIMIT_BURST", "many"), ("JWT_SECRET", "short")];

    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(0));
    app.stop().await;
    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(1));
}
