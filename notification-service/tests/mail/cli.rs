//! The binary explains itself: `--help` and `--version`, configuration errors (exit code 2,
//! the check across settings included), and a `healthcheck` that reads `OPS_ADDR` alone.

use std::process::Output;

use tests::cli::text;

use notification_service::{Config, SERVICE};

/// Runs the built binary with `args` and nothing but `vars` in its environment.
async fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    tests::cli::run(env!("CARGO_BIN_EXE_notification-service"), args, vars).await
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_its_default_and_a_meaning() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    // Every setting the Config declares (the README's table is checked against the same list).
    let settings = shared::config::settings::<Config>(&SERVICE);
    assert!(settings.len() >= 22, "{settings:?}");
    tests::cli::assert_help_lists(
        &text(&output.stdout),
        SERVICE.about,
        settings.into_iter().map(|setting| (setting.var, setting.default)),
    );
}

#[tokio::test]
async fn version_prints_the_package_version() {
    let output = run(&["--version"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), format!("notification-service {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn an_invalid_setting_stops_the_start_with_exit_code_2_naming_it() {
    let output = run(&[], &[("AMBIGUOUS_SEND", "maybe")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("AMBIGUOUS_SEND=\"maybe\" is invalid"), "{error}");
}

#[tokio::test]
async fn a_claim_lease_shorter_than_two_smtp_timeouts_is_a_configuration_error() {
    let output = run(&[], &[("SMTP_TIMEOUT_MS", "20000"), ("CLAIM_LEASE_MS", "30000")]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("CLAIM_LEASE_MS=\"30000\" is invalid: must be at least 2 × SMTP_TIMEOUT_MS"), "{error}");
}

#[tokio::test]
async fn the_healthcheck_reads_ops_addr_alone() {
    // Nothing listens there: 1, not the 2 of the unrelated bad setting.
    let output = run(&["healthcheck"], &[("OPS_ADDR", "127.0.0.1:9"), ("PREFETCH", "many")]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
}
