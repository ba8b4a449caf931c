//! Test logging: `tracing` output routed through libtest's capture, off unless asked for.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter, in `RUST_LOG` syntax (e.g. `TEST_LOG=debug`
/// or `TEST_LOG=user_service=trace,lapin=warn`).
pub const FILTER_VAR: &str = "TEST_LOG";

/// Installs a global `tracing` subscriber that writes through the test writer (so output
/// is shown only for failing tests, or with `--nocapture`), filtered by `TEST_LOG`.
///
/// Nothing is printed when `TEST_LOG` is unset or invalid. Safe to call from every test: only
/// the first call in a process does anything, and if another subscriber was installed first
/// that one is kept.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("off"));
        let _already_installed = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}
