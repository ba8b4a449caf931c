//! Provisioning of the npm project in `tests/nest`: `node_modules` installed from the lockfile
//! with `npm ci`, once per lockfile content, by whichever test process gets there first.
//!
//! An exclusive lock on `tests/nest/.npm-ci.lock` is held across the check and the install, so
//! parallel test processes never run `npm ci` twice or read a half-written `node_modules`
//! while it installs. A stamp inside `node_modules` records the SHA-256 of the
//! `package-lock.json` it was installed from; the install is skipped while it matches (and
//! `npm ci`, which starts by deleting `node_modules`, deletes a stale stamp with the rest).

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output},
};

use sha2::{Digest as _, Sha256};

/// The one line a test fails with when Node.js is missing or too old.
pub const NODE_MISSING: &str =
    "NestJS interop tests need Node.js >= 20 on PATH (install nodejs/npm); nothing else is required";
/// The oldest Node.js major version the interop project supports (`engines` in package.json).
const MIN_NODE_MAJOR: u32 = 20;
/// The lock file, beside `package.json` (not in `node_modules`, which `npm ci` deletes).
const LOCK_FILE: &str = ".npm-ci.lock";
/// The stamp, inside `node_modules`.
const STAMP_FILE: &str = ".test-kit-package-lock.sha256";

/// Why `tests/nest` could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `node` (or `npm`) cannot be run, or `node` is older than 20.
    #[error("{NODE_MISSING}")]
    NodeMissing,
    /// A file of the project could not be read, written or locked.
    #[error("test kit: cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `npm ci` ran and failed (e.g. the npm registry is unreachable).
    #[error("test kit: `npm ci` in {} failed ({status}); its output:\n{output}", dir.display())]
    NpmFailed { dir: PathBuf, status: ExitStatus, output: String },
}

/// Makes `dir/node_modules` match `dir/package-lock.json` (see the module docs). Blocking.
pub fn provision(dir: &Path) -> Result<(), ProvisionError> {
    check_node()?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(file_error("open", &lock_path))?;
    // Called through the trait: std's own `File::lock` is newer than the workspace's MSRV.
    fs4::FileExt::lock(&lock).map_err(file_error("lock", &lock_path))?;

    let lockfile = dir.join("package-lock.json");
    let wanted = hex_sha256(&fs::read(&lockfile).map_err(file_error("read", &lockfile))?);
    let stamp = dir.join("node_modules").join(STAMP_FILE);
    if fs::read_to_string(&stamp).is_ok_and(|installed| installed.trim() == wanted) {
        return Ok(());
    }
    eprintln!("test kit: installing {} with `npm ci` (once per package-lock.json)", dir.display());
    let output = run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))?;
    if !output.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        return Err(ProvisionError::NpmFailed { dir: dir.to_owned(), status: output.status, output: text });
    }
    fs::write(&stamp, format!("{wanted}\n")).map_err(file_error("write", &stamp))?;
    // The lock is released when `lock` is closed, here.
    drop(lock);
    Ok(())
}

/// Checks that `node --version` runs and names version 20 or later.
fn check_node() -> Result<(), ProvisionError> {
    let output = run(Command::new("node").arg("--version"))?;
    let version = String::from_utf8_lossy(&output.stdout);
    let major = version.trim().trim_start_matches('v').split('.').next().and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if output.status.success() && major >= MIN_NODE_MAJOR => Ok(()),
        _ => Err(ProvisionError::NodeMissing),
    }
}

/// Runs `command` to completion; a program that cannot be started means Node.js is missing.
fn run(command: &mut Command) -> Result<Output, ProvisionError> {
    command.output().map_err(|_not_started| ProvisionError::NodeMissing)
}

fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ProvisionError {
    let path = path.to_owned();
    move |source| ProvisionError::File { action, path, source }
}
