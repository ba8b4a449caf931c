//! Test logging: `tracing` output routed through libtest's capture, off unless asked for;
//! and reading a service's JSON log by span.

use std::sync::Once;

use serde_json::Value;
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

/// The lines of a service's JSON log (`LOG_FORMAT=json`) logged inside a span named `span`
/// whose field `field` is `value`: each as (the line, that span's fields).
pub fn lines_in_span(log: &str, span: &str, field: &str, value: &str) -> Vec<(Value, Value)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| {
            let spans = line["spans"].as_array()?;
            let found = spans.iter().find(|candidate| candidate["name"] == span && candidate[field] == value)?.clone();
            Some((line, found))
        })
        .collect()
}
