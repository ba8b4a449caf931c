//! The binary explains itself: `--help` and `--version`, configuration errors, the deprecated
//! pool size name, and a `healthcheck` that reads `OPS_ADDR` alone.

use std::process::Output;

use tests::cli::text;

use crate::test_app::TestApp;

/// Runs the built binary with `args` and nothing but `vars` in its environment.
async fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    tests::cli::run(env!("CARGO_BIN_EXE_auth-service"), args, vars).await
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_its_default_and_a_meaning() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    // Every setting the Config declares (the README's table is checked against the same list).
    let settings = shared::config::settings::<auth_service::Config>(&auth_service::SERVICE);
    assert_eq!(settings.len(), 37, "{settings:?}");
    let jwt_secret = settings.iter().find(|setting| setting.var == "JWT_SECRET");
    assert_eq!(jwt_secret.map(|setting| setting.default.as_deref()), Some(None), "the key has no default");
    tests::cli::assert_help_lists(
        &help,
        auth_service::SERVICE.about,
        settings.into_iter().map(|setting| (setting.var, setting.default)),
    );
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
async fn a_blank_jwt_secret_counts_as_unset_not_as_an_empty_key() {
    // Compose passes `JWT_SECRET: ${JWT_SECRET:-}`: blank means "not configured".
    let output = run(&[], &[("JWT_SECRET", "")]).await;
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let said = text(&output.stderr);
    assert!(said.contains("JWT_SECRET is required"), "{said}");
    assert!(!said.contains("got 0"), "{said}");
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
async fn the_healthcheck_ignores_unrelated_bad_settings_and_follows_the_ops_port() {
    let mut app = TestApp::spawn().await;
    let ops_addr = app.ops_addr.to_string();
    let vars = [("OPS_ADDR", ops_addr.as_str()), ("RATE_LIMIT_BURST", "many"), ("JWT_SECRET", "short")];

    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(0));
    app.stop().await;
    assert_eq!(run(&["healthcheck"], &vars).await.status.code(), Some(1));
}
