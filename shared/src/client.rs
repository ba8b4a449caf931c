//! The client: NestJS's `ClientProxy` counterpart (`send` and `emit`).
//!
//! One connection carries everything. Requests are published on one channel that also
//! consumes RabbitMQ's direct reply-to pseudo-queue, and replies are matched to callers by
//! correlation id, so any number of concurrent `send`s share it. Every `send` has a deadline;
//! a reply arriving after it is dropped. Events go out on a second channel in publisher-confirm
//! mode, persistent, and `emit` returns only once the broker confirmed them.
//!
//! When the link breaks, pending `send`s fail at once with [`RpcError::Unavailable`] and the
//! supervisor connects again, to the next node of a cluster first. Calls made while it fails
//! over wait for the new link within their deadline; once every node refused, new calls fail
//! fast until a node is back. Nothing needs a restart.
//!
//! By concern: [`ClientConfig`] and the per-call options (`config`), the calls waiting for a
//! reply (`pending`), the current link (`link`), the reconnect loop (`supervisor`), and the
//! two call APIs (`send`, `emit`).
//!
//! [`RpcError::Unavailable`]: crate::RpcError::Unavailable

mod config;
mod emit;
mod link;
mod pending;
mod send;
mod supervisor;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{ClientConfig, EmitOptions, EmitTarget, SendOptions};

use link::CurrentLink;
use pending::PendingCalls;
use supervisor::Supervisor;

/// A cheap-to-clone handle on the client's connection. See the module docs.
///
/// The connection lives as long as the client: until the shutdown token given to
/// [`Client::start`] fires, [`Client::shutdown`] is called, or the last clone is dropped.
/// [`Client::closed`] waits for the end.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    supervisor: Arc<Supervisor>,
}

/// What the callers and the supervisor task share.
struct Inner {
    config: ClientConfig,
    link: CurrentLink,
    calls: PendingCalls,
}

impl Client {
    /// Starts the client's connection supervisor; it runs until `shutdown` fires (or see
    /// [`Client::shutdown`]). Calls made before the first connection is up fail with
    /// [`RpcError::Unavailable`](crate::RpcError::Unavailable): use
    /// [`Client::wait_connected`] at startup when that matters.
    pub fn start(config: ClientConfig, shutdown: CancellationToken) -> Self {
        let inner = Arc::new(Inner { config, link: CurrentLink::new(), calls: PendingCalls::new() });
        let supervisor = Arc::new(Supervisor::start(Arc::clone(&inner), &shutdown));
        Self { inner, supervisor }
    }

    /// Whether the client currently has a live link to the broker.
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// The node the client is connected to (`host:port`), none while reconnecting.
    pub fn node(&self) -> Option<String> {
        self.inner.link.node()
    }

    /// A receiver of the connected flag, for readiness endpoints (`ops::Readiness::flag`).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.link.subscribe()
    }

    /// Waits until the client is connected, up to `deadline`; returns whether it is.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        let mut connected = self.inner.link.subscribe();
        tokio::time::timeout(deadline, connected.wait_for(|up| *up)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// Stops this client (and only it: the token given to [`Client::start`] is left alone)
    /// and waits until it is closed: calls in flight fail with `Unavailable`, the channels
    /// and the connection are closed.
    pub async fn shutdown(&self) {
        self.supervisor.stop();
        self.closed().await;
    }

    /// Resolves once the client has stopped, after its shutdown token fired or
    /// [`Client::shutdown`] was called: the connection is closed and no call is pending.
    pub async fn closed(&self) {
        self.supervisor.finished().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BrokerConfig, RpcError};

    fn unreachable_client(shutdown: &CancellationToken) -> Client {
        let broker = BrokerConfig::new("amqp://127.0.0.1:1/%2f", "lifecycle");
        Client::start(ClientConfig::new(broker), shutdown.clone())
    }

    async fn wait_until(done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited.await.expect("the supervisor task did not end");
    }

    #[tokio::test]
    async fn closed_resolves_once_the_shutdown_token_fires_for_every_clone() {
        let shutdown = CancellationToken::new();
        let client = unreachable_client(&shutdown);
        let other = client.clone();
        let early = tokio::time::timeout(Duration::from_millis(50), client.closed()).await;
        assert!(early.is_err(), "the client must run until it is stopped");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(client.closed(), other.closed()) })
            .await
            .expect("every clone sees the end");
        client.closed().await;
    }

    #[tokio::test]
    async fn shutdown_stops_this_client_only() {
        let shutdown = CancellationToken::new();
        let (stopped, running) = (unreachable_client(&shutdown), unreachable_client(&shutdown));
        tokio::time::timeout(Duration::from_secs(5), stopped.shutdown()).await.expect("shutdown waits for the end");
        assert!(!shutdown.is_cancelled(), "the shared token is left alone");
        let still = tokio::time::timeout(Duration::from_millis(50), running.closed()).await;
        assert!(still.is_err(), "the other client keeps running");
        let error = stopped.send_raw(&"x".into(), &().into(), SendOptions::default()).await.unwrap_err();
        assert!(matches!(error, RpcError::Unavailable { .. }), "{error:?}");
        shutdown.cancel();
        running.closed().await;
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_the_supervisor() {
        let shutdown = CancellationToken::new();
        let client = unreachable_client(&shutdown);
        // The task holds the shared state while it runs: its release shows the task ended.
        let state = Arc::downgrade(&client.inner);
        let clone = client.clone();
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(state.upgrade().is_some(), "a clone is still alive");
        drop(clone);
        wait_until(|| state.upgrade().is_none()).await;
        assert!(!shutdown.is_cancelled());
    }
}
