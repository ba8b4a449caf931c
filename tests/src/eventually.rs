//! Polling with a deadline: the only way the kit waits for something to happen.

use std::{fmt::Debug, future::Future, time::Duration};

use tokio::time::Instant;

/// The pause after the first failed attempt; each later pause is 1.5 times the previous one.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(250);
/// The time one attempt may take even when the deadline is (almost) spent.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Calls `probe` until it returns `Ok`, and returns that value.
///
/// Attempts are separated by short pauses that grow from 10 ms to at most 250 ms. The probe
/// runs at least once. When `deadline` has passed since the call began, it panics with the
/// last error (`Debug`-formatted) and the number of attempts. A single attempt that hangs is
/// cut off at the deadline too, so this always returns or panics shortly after `deadline`.
/// Needs a Tokio runtime with the time driver (any `#[tokio::test]` has one).
///
/// # Panics
/// When the deadline passes without an `Ok`; the message carries the last error.
pub async fn eventually<T, E, F, Fut>(deadline: Duration, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let give_up = Instant::now() + deadline;
    let mut pause = FIRST_PAUSE;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let allowed = give_up.saturating_duration_since(Instant::now()).max(MIN_ATTEMPT);
        let last_error = match tokio::time::timeout(allowed, probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(error)) => format!("{error:?}"),
            Err(_) => format!("the attempt itself did not finish within {allowed:?}"),
        };
        let now = Instant::now();
        if now >= give_up {
            panic!(
                "eventually: not satisfied within {deadline:?} ({attempts} attempts); \
                 last error: {last_error}"
            );
        }
        tokio::time::sleep(pause.min(give_up - now)).await;
        pause = (pause * 3 / 2).min(MAX_PAUSE);
    }
}

/// Like [`eventually`] for probes that answer `None` until the thing they look for exists;
/// returns the first `Some` value, or panics at the deadline.
///
/// # Panics
/// When the deadline passes while the probe still answers `None`.
pub async fn eventually_some<T, F, Fut>(deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually(deadline, || {
        let attempt = probe();
        async move { attempt.await.ok_or("still None") }
    })
    .await
}
