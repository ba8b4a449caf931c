//! The official AsyncAPI parser (`@asyncapi/parser`, npm) run on a document, from the npm
//! project in `tests/asyncapi` (installed from its lockfile on first use, under the same lock
//! and stamp as `tests/nest`: [`crate::nest::provision`]).
//!
//! Needs Node.js 20 or later on `PATH`; without it the test fails saying so.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::sync::OnceCell;

/// The `tests/asyncapi` folder.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("asyncapi")
}

/// What the parser said about one document.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Diagnostics of severity error: `{code, message, path}`.
    pub errors: Vec<Value>,
    /// Diagnostics of severity warning.
    pub warnings: Vec<Value>,
    /// The file's content as JSON (a YAML file read with the YAML 1.2 core schema).
    pub document: Value,
}

async fn ensure_ready() {
    static READY: OnceCell<()> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(|| crate::nest::provision::provision(&project_dir())).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("{error}"),
                Err(error) => panic!("test kit: provisioning tests/asyncapi did not finish: {error}"),
            }
        })
        .await;
}

/// Parses the AsyncAPI document in `file` (YAML or JSON) with `@asyncapi/parser`.
///
/// # Panics
/// When Node.js is missing, the project cannot be installed or the script fails.
pub async fn validate(file: &Path) -> Validation {
    ensure_ready().await;
    let output = tokio::process::Command::new("node")
        .arg("validate.js")
        .arg(file)
        .current_dir(project_dir())
        .output()
        .await
        .unwrap_or_else(|error| panic!("`node validate.js` did not run: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "validate.js failed on {} ({}):\n{}{}",
        file.display(),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("validate.js prints one JSON line");
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    Validation { errors: list("errors"), warnings: list("warnings"), document: report["document"].clone() }
}
