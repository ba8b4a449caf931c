//! schemathesis (PyPI), the schema-driven API fuzzer, provisioned for tests: a virtualenv
//! under `target/test-kit/schemathesis-<VERSION>`, created and filled with `pip install
//! schemathesis==VERSION` once per version by whichever test process gets there first.
//!
//! An exclusive lock on `target/test-kit/schemathesis.lock` is held across the check and the
//! install (as [`crate::nest`] does for `npm ci`), so parallel test processes never install
//! twice or run a half-installed package. A stamp inside the directory records the version it
//! holds and the path it was made at (a virtualenv's scripts name their interpreter by absolute
//! path, so one moved with its `target/` no longer runs); the install is skipped while both
//! match, and a failed or interrupted install is started over from an empty directory.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output},
};

use tokio::sync::OnceCell;

/// The schemathesis release the tests run (its checks and CLI flags change between releases).
pub const VERSION: &str = "4.32.5";
/// The one line a test fails with when Python cannot make a virtualenv.
pub const PYTHON_MISSING: &str = "schemathesis tests need python3 (3.9 or later) with its venv module on PATH \
     (Debian/Ubuntu: apt-get install python3 python3-venv); schemathesis itself is installed from PyPI by the test";
const STAMP_FILE: &str = ".test-kit-installed";

/// Why schemathesis could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `python3 -m venv` cannot be run.
    #[error("{PYTHON_MISSING} ({detail})")]
    PythonMissing { detail: String },
    /// A file of the cache could not be read, written or locked.
    #[error("test kit: cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `pip install` ran and failed (e.g. PyPI is unreachable).
    #[error("test kit: `pip install schemathesis=={VERSION}` failed ({status}); its output:\n{output}")]
    PipFailed { status: ExitStatus, output: String },
}

/// Where the virtualenvs live: `target/test-kit` of this workspace.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("test-kit")
}

/// The `schemathesis` executable, installed first if needed (once per process).
///
/// # Panics
/// With [`PYTHON_MISSING`] when Python cannot make a virtualenv, or with pip's output when the
/// install fails.
pub async fn ensure_ready() -> PathBuf {
    static READY: OnceCell<PathBuf> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(|| provision(&cache_dir())).await {
                Ok(Ok(executable)) => executable,
                Ok(Err(error)) => panic!("{error}"),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => panic!("test kit: provisioning schemathesis did not finish: {error}"),
            }
        })
        .await
        .clone()
}

/// Makes `cache/schemathesis-VERSION` a virtualenv holding schemathesis VERSION (see the
/// module docs); returns its `schemathesis` executable. Blocking.
pub fn provision(cache: &Path) -> Result<PathBuf, ProvisionError> {
    fs::create_dir_all(cache).map_err(file_error("create", cache))?;
    let lock_path = cache.join("schemathesis.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(file_error("open", &lock_path))?;
    fs4::FileExt::lock(&lock).map_err(file_error("lock", &lock_path))?;

    let venv = cache.join(format!("schemathesis-{VERSION}"));
    let executable = venv.join("bin").join("schemathesis");
    let stamp = venv.join(STAMP_FILE);
    let made = stamp_text(&venv);
    if fs::read_to_string(&stamp).is_ok_and(|installed| installed == made) && executable.exists() {
        return Ok(executable);
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(file_error("remove", &venv))?;
    }
    eprintln!("test kit: installing schemathesis {VERSION} into {} (once per version)", venv.display());
    let created = run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|error| ProvisionError::PythonMissing { detail: error.to_string() })?;
    if !created.status.success() {
        return Err(ProvisionError::PythonMissing { detail: output_text(&created) });
    }
    let pip = venv.join("bin").join("pip");
    let installed = run(Command::new(&pip).args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        &format!("schemathesis=={VERSION}"),
    ]))
    .map_err(|error| ProvisionError::PythonMissing { detail: format!("{}: {error}", pip.display()) })?;
    if !installed.status.success() {
        return Err(ProvisionError::PipFailed { status: installed.status, output: output_text(&installed) });
    }
    fs::write(&stamp, made).map_err(file_error("write", &stamp))?;
    // The lock is released when `lock` is closed, here.
    drop(lock);
    Ok(executable)
}

/// What the stamp of a virtualenv at `venv` holds: the version, then where it was made.
fn stamp_text(venv: &Path) -> String {
    format!("{VERSION}\n{}\n", venv.display())
}

fn run(command: &mut Command) -> io::Result<Output> {
    command.env_remove("PYTHONHOME").env_remove("PYTHONPATH").output()
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ProvisionError {
    let path = path.to_owned();
    move |source| ProvisionError::File { action, path, source }
}
