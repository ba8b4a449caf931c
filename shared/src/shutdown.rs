//! One shutdown signal for the whole process.
//!
//! The signal is watched inside the future that runs the service, not in a task of its own:
//! nothing outlives the service, and nothing is left for anyone to await.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Runs `service` with a token that SIGINT or SIGTERM cancels, and returns its output once it
/// has stopped. Every long-running loop of the service selects on the token; after the signal
/// the service gets all the time it needs to stop gracefully.
pub async fn run_until_signal<F, Fut>(service: F) -> Fut::Output
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future,
{
    let token = CancellationToken::new();
    let mut service = std::pin::pin!(service(token.clone()));
    tokio::select! {
        output = &mut service => return output,
        () = wait_for_signal() => {
            tracing::info!("shutdown signal received");
            token.cancel();
        }
    }
    service.await
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_stops_on_its_own_returns_its_output() {
        let output = run_until_signal(|token| async move { (token.is_cancelled(), 7) }).await;
        assert_eq!(output, (false, 7));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_cancels_the_token_and_the_service_finishes_stopping() {
        let stopped_gracefully = run_until_signal(|token| async move {
            // The watcher installs its handler on its first poll, next to this future's first.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let pid = std::process::id().to_string();
            let sent = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
            assert!(sent.is_ok_and(|status| status.success()), "could not send SIGTERM");
            tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled()).await.is_ok()
        })
        .await;
        assert!(stopped_gracefully, "SIGTERM must cancel the token and let the service finish");
    }
}
