//! Removal of this process's containers when it ends, however it ends.
//!
//! Containers kept in statics are never dropped, so testcontainers cannot remove them. Instead
//! a small shell process waits on a pipe whose write end only this process holds; the kernel
//! closes it when the process exits (normally, by panic, or killed), the shell's `read` then
//! returns, and it runs `docker rm -f -v` on the containers. No polling and no timers.

use std::{
    process::{Child, Command, Stdio},
    sync::Mutex,
};

/// The watcher processes; holding them keeps the write ends of their pipes open.
static WATCHERS: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Arranges for the container `id` to be removed when this process exits. If the watcher
/// cannot be started, says so on stderr (the container then outlives the tests).
pub(super) fn remove_at_exit(id: &str) {
    let script = "trap '' INT TERM HUP; read _ignored; exec docker rm -f -v \"$1\"";
    let spawned = Command::new("sh")
        .args(["-c", script, "test-kit-reaper", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => WATCHERS.lock().unwrap_or_else(|e| e.into_inner()).push(child),
        Err(error) => eprintln!(
            "test kit: cannot start the watcher that removes container {id} at exit ({error}); \
             remove it with `docker rm -f {id}`"
        ),
    }
}
