//! The binary explains itself: `--help` and `--version`, configuration errors (exit code 2),
//! deprecated names, and a `healthcheck` that reads `OPS_ADDR` alone.

use std::process::Output;

use tests::cli::text;

use user_service::{Config, SERVICE};

use crate::support::TestApp;

/// Runs the built binary with `args` and nothing but `vars` in its environment.
async fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    tests::cli::run(env!("CARGO_BIN_EXE_user-service"), args, vars).await
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_its_default_and_a_meaning() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    // Every setting the Config declares (the README's table is checked against the same list).
    let settings = shared::config::settings::<Config>(&SERVICE);
    assert!(settings.len() >= 17, "{settings:?}");
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
