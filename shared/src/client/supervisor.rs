//! The client's one background task: connect, serve replies until the link breaks, fail
//! what was pending, start over; until the client is stopped.
//!
//! The task is owned: [`Supervisor`] holds its handle, every [`Client`](super::Client) clone
//! shares the `Supervisor`, and [`Supervisor::finished`] awaits the task. It stops when the
//! shutdown token given to `Client::start` fires, when `Client::shutdown` is called, or when
//! the last clone of the client is dropped; never on its own while a caller could use it.

use std::sync::Arc;

use futures::StreamExt;
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{Inner, link::Link};
use crate::{
    broker_urls::redact,
    connection::{self, Connected, InUse, Rotation},
};

/// The supervisor task and the token that stops it.
pub(super) struct Supervisor {
    /// A child of the token given to `Client::start`: stopping this client stops nothing else.
    stop: CancellationToken,
    /// `None` once someone saw the task finish. Behind an async lock so that any number of
    /// clones can wait for the end, and a waiter that gives up leaves the handle for the next.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    pub fn start(inner: Arc<Inner>, shutdown: &CancellationToken) -> Self {
        let stop = shutdown.child_token();
        let task = tokio::spawn(supervise(inner, stop.clone()));
        Self { stop, task: Mutex::new(Some(task)) }
    }

    /// Tells the task to close the link and end.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once the task has ended: its link closed and every pending call failed.
    pub async fn finished(&self) {
        let mut task = self.task.lock().await;
        if let Some(handle) = task.as_mut() {
            if let Err(error) = handle.await {
                tracing::error!(error = %error, "the client's supervisor task failed");
            }
            *task = None;
        }
    }
}

impl Drop for Supervisor {
    /// The last client handle is gone: nobody can send through the link any more.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Connect, serve replies until the link breaks, fail what was pending, start over.
async fn supervise(inner: Arc<Inner>, stop: CancellationToken) {
    let name = inner.config.broker.connection_name.clone();
    let mut rotation = Rotation::new(&inner.config.broker);
    let round_failed = || inner.link.set_failing_over(false);
    while let Some(Connected { connection, node }) =
        connection::connect_with_backoff(&inner.config.broker, &mut rotation, &stop, round_failed).await
    {
        // Shared with the link, which opens fresh events channels on it.
        let connection = Arc::new(connection);
        let lost = match connection::bounded(Link::open(&inner.config, &connection)).await {
            Ok((link, replies)) => {
                let _in_use = InUse::register(&name, &node);
                inner.link.set(Some((link.clone(), node.clone())));
                inner.link.set_failing_over(false);
                tracing::info!(connection = %name, node = %node, "client connected");
                let lost = tokio::select! {
                    biased;
                    () = stop.cancelled() => None,
                    lost = read_replies(&inner, replies) => Some(lost),
                    () = inner.link.relink_requested() => Some(None),
                };
                inner.link.set(None);
                link.lost.cancel();
                if lost.is_none() {
                    link.close().await;
                }
                lost
            }
            Err(error) => Some(Some(error)),
        };
        match lost {
            None => {
                inner.calls.fail_all(None);
                connection::close(&connection).await;
                break;
            }
            Some(error) => {
                // Calls in flight on this link fail now, with `Unavailable`; new ones fail
                // fast until the next node is connected.
                inner.calls.fail_all(error.as_ref());
                inner.link.set_failing_over(true);
                let reason = error.as_ref().map(|error| redact(&error.to_string())).unwrap_or_default();
                tracing::warn!(connection = %name, node = %node, error = %reason, "client lost the broker; reconnecting");
                connection::close(&connection).await;
            }
        }
    }
    inner.link.set(None);
    inner.link.set_failing_over(false);
    inner.calls.fail_all(None);
}

/// Reads replies until the consumer ends; returns why it ended.
async fn read_replies(inner: &Inner, mut replies: lapin::Consumer) -> Option<lapin::Error> {
    while let Some(delivery) = replies.next().await {
        match delivery {
            Ok(delivery) => inner.calls.deliver(&delivery),
            Err(error) => return Some(error),
        }
    }
    None
}
