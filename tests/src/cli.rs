//! The service binaries run as an operator runs them, for the tests about the binaries
//! themselves: `--help`, `--version`, exit codes, `healthcheck`.

use std::process::Output;

use tokio::process::Command;

/// Runs `program` (a binary's path, e.g. `env!("CARGO_BIN_EXE_user-service")`) with `args` and
/// nothing but `vars` in its environment, and waits for it to exit.
pub async fn run(program: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .await
        .unwrap_or_else(|error| panic!("{program} did not run: {error}"))
}

/// Output bytes as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `help` (a binary's `--help`) starts with `about`, offers `healthcheck`, and
/// lists every one of `settings` (variable, default) in a paragraph of its own with its
/// variable, its default (when it has one) and a line of meaning.
pub fn assert_help_lists(help: &str, about: &str, settings: impl IntoIterator<Item = (String, Option<String>)>) {
    assert!(help.starts_with(about), "the help starts with what the service is:\n{help}");
    assert!(help.contains("healthcheck"), "{help}");
    for (var, default) in settings {
        let entry = help.split("\n\n").find(|entry| entry.contains(&format!("[env: {var}")));
        let entry = entry.unwrap_or_else(|| panic!("{var} missing from:\n{help}"));
        if let Some(default) = default {
            let shown = if default.contains(' ') { format!("\"{default}\"") } else { default };
            assert!(entry.contains(&format!("[default: {shown}]")), "{var} without its default: {entry}");
        }
        assert!(entry.lines().nth(1).is_some_and(|meaning| !meaning.trim().is_empty()), "{var}: {entry}");
    }
}
