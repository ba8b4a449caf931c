//! Async cleanup from `Drop`, which cannot await and may run inside a runtime: the work runs on
//! a thread of its own with a current-thread runtime of its own, and the caller waits for it
//! with a bound, so a teardown can neither hang a test nor be skipped silently.

use std::{
    future::Future,
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

/// Runs `work` to completion on a thread named `name` and returns its output, or why it did
/// not finish within `limit` (it timed out, panicked, or could not be started).
pub(crate) fn run_bounded<F, Fut, T>(name: String, limit: Duration, work: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (done, outcome) = mpsc::channel();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime
                .block_on(async { tokio::time::timeout(limit, work()).await })
                .map_err(|_| format!("timed out after {limit:?}")),
            Err(error) => Err(format!("no runtime: {error}")),
        };
        let _receiver_gone = done.send(result);
    });
    if let Err(error) = spawned {
        return Err(format!("cannot start a thread: {error}"));
    }
    // The thread is left detached: it ends by itself once `work` finishes or times out.
    match outcome.recv_timeout(limit + Duration::from_secs(1)) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err(format!("timed out after {limit:?}")),
        Err(RecvTimeoutError::Disconnected) => Err("it panicked".to_owned()),
    }
}
