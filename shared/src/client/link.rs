//! The client's link to the broker: the channels of one live connection, and the slot the
//! callers read it from while the supervisor replaces it.

use std::sync::{Arc, PoisonError, RwLock};

use lapin::{
    Channel, Connection,
    options::{BasicConsumeOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tokio::{
    sync::{Notify, futures::Notified, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::ClientConfig;
use crate::topology;

/// The channels of one live connection.
#[derive(Clone)]
pub(super) struct Link {
    /// Publishes requests and consumes their replies (direct reply-to needs both on one channel).
    pub rpc: Channel,
    /// Publisher-confirm mode, for events; replaced after a refusal (see [`EventsChannel`]).
    pub events: Arc<EventsChannel>,
    /// Cancelled when this link is given up: an emit waiting for a confirm on it stops
    /// waiting at once (a confirm lost with its node never arrives).
    pub lost: CancellationToken,
}

impl Link {
    /// Opens both channels on a fresh connection, starts consuming replies and declares what
    /// the configuration asks for; returns the link and its reply consumer.
    pub async fn open(
        config: &ClientConfig,
        connection: &Arc<Connection>,
    ) -> Result<(Self, lapin::Consumer), lapin::Error> {
        let rpc = connection.create_channel().await?;
        let replies = rpc
            .basic_consume(
                topology::REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await?;
        let events = connection.create_channel().await?;
        events.confirm_select(ConfirmSelectOptions::default()).await?;
        if let Some(exchange) = &config.events_exchange {
            topology::declare_topic_exchange(&events, exchange).await?;
        }
        if let (Some(queue), true) = (&config.queue, config.declare_queue) {
            topology::declare_queue(&events, queue, true).await?;
        }
        let events = Arc::new(EventsChannel {
            current: RwLock::new(events),
            connection: Arc::clone(connection),
            renewing: tokio::sync::Mutex::new(()),
        });
        Ok((Self { rpc, events, lost: CancellationToken::new() }, replies))
    }

    /// Closes both channels, before the connection is closed on shutdown.
    pub async fn close(&self) {
        for channel in [&self.rpc, &self.events.channel()] {
            if let Err(error) = channel.close(200, "shutdown".into()).await {
                tracing::debug!(error = %error, "closing a channel failed");
            }
        }
    }
}

/// The events channel of a link, which an emit can have replaced.
///
/// Right after a node loss, a channel that first publishes to a quorum queue while the queue
/// is still electing its new leader can keep being refused (`basic.nack`) by RabbitMQ 3.10
/// long after the election, while a fresh channel is served at once. So a refused emit gets
/// its link a fresh channel for the next attempt.
pub(super) struct EventsChannel {
    current: RwLock<Channel>,
    connection: Arc<Connection>,
    renewing: tokio::sync::Mutex<()>,
}

impl EventsChannel {
    /// The channel to publish on now.
    pub fn channel(&self) -> Channel {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces `refused` by a fresh channel in confirm mode (once, however many emits saw it
    /// refuse) and closes it.
    pub async fn renew(&self, refused: &Channel) -> Result<(), lapin::Error> {
        let _one_at_a_time = self.renewing.lock().await;
        if self.channel().id() != refused.id() {
            return Ok(());
        }
        let fresh = self.connection.create_channel().await?;
        fresh.confirm_select(ConfirmSelectOptions::default()).await?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        if let Err(error) = refused.close(200, "replaced".into()).await {
            tracing::debug!(error = %error, "closing a refused events channel failed");
        }
        Ok(())
    }
}

/// The link callers use right now (none while reconnecting), and the connected flag that
/// follows it.
pub(super) struct CurrentLink {
    /// The link and the node (`host:port`) it is on.
    link: RwLock<Option<(Link, String)>>,
    connected: watch::Sender<bool>,
    /// True from the loss of a working link until the supervisor either reached a node again
    /// or found every node refusing: calls made meanwhile wait for the next node instead of
    /// failing, since on a cluster it is usually there within moments.
    failing_over: watch::Sender<bool>,
    /// Set when a channel of the link died on its own (the broker can close one channel and
    /// keep the connection): the supervisor then rebuilds the whole link.
    relink: Notify,
}

impl CurrentLink {
    pub fn new() -> Self {
        Self {
            link: RwLock::new(None),
            connected: watch::channel(false).0,
            failing_over: watch::channel(false).0,
            relink: Notify::new(),
        }
    }

    pub fn get(&self) -> Option<Link> {
        self.link.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|(link, _)| link.clone())
    }

    /// The node of the current link, `host:port`.
    pub fn node(&self) -> Option<String> {
        self.link.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|(_, node)| node.clone())
    }

    pub fn set(&self, link: Option<(Link, String)>) {
        let up = link.is_some();
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link;
        self.connected.send_replace(up);
    }

    /// Marks the start (a working link was lost) or the end (a node was reached, or every
    /// node refused) of a failover.
    pub fn set_failing_over(&self, failing_over: bool) {
        self.failing_over.send_replace(failing_over);
    }

    /// The current link; while failing over, waits for the next one until `deadline`. `None`
    /// when there is no link and none is expected soon (the broker is down, or the client
    /// never connected yet).
    pub async fn get_or_failover(&self, deadline: Instant) -> Option<Link> {
        if let Some(link) = self.get() {
            return Some(link);
        }
        let (mut failing_over, mut connected) = (self.failing_over.subscribe(), self.connected.subscribe());
        let wait = async {
            loop {
                if let Some(link) = self.get() {
                    return Some(link);
                }
                if !*failing_over.borrow_and_update() {
                    return None;
                }
                tokio::select! {
                    changed = failing_over.changed() => changed.ok()?,
                    changed = connected.changed() => changed.ok()?,
                }
            }
        };
        tokio::time::timeout_at(deadline, wait).await.ok().flatten()
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Asks the supervisor to rebuild the link: a caller found one of its channels dead.
    pub fn request_relink(&self) {
        self.relink.notify_one();
    }

    /// Resolves once a caller asked for a new link.
    pub fn relink_requested(&self) -> Notified<'_> {
        self.relink.notified()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{pin::pin, task::Poll, time::Duration};

    use lapin::ConnectionProperties;

    use super::*;
    use crate::BrokerConfig;

    /// A link on a fresh connection to the test broker.
    async fn open_link() -> (Link, Arc<Connection>) {
        let url = ::tests::amqp_url().await;
        let connection = Arc::new(Connection::connect(&url, ConnectionProperties::default()).await.unwrap());
        let config = ClientConfig::new(BrokerConfig::new(&url, "link-unit-test"));
        let (link, _replies) = Link::open(&config, &connection).await.unwrap();
        (link, connection)
    }

    #[tokio::test]
    async fn a_refused_events_channel_is_replaced_once_by_a_fresh_confirming_one_and_closed() {
        let (link, connection) = open_link().await;
        let refused = link.events.channel();
        link.events.renew(&refused).await.unwrap();
        let fresh = link.events.channel();
        assert_ne!(fresh.id(), refused.id(), "the refused channel is still the one emits publish on");
        assert!(fresh.status().connected() && fresh.status().confirm(), "the fresh channel confirms publishes");
        assert!(!refused.status().connected(), "the refused channel is left open");
        // Another emit that saw the same refusal finds it replaced already: nothing more happens.
        link.events.renew(&refused).await.unwrap();
        assert_eq!(link.events.channel().id(), fresh.id(), "renewed twice for one refusal");
        connection.close(200, "done".into()).await.unwrap();
    }

    #[tokio::test]
    async fn without_a_link_a_caller_waits_only_while_failing_over() {
        let current = CurrentLink::new();
        let far = Instant::now() + Duration::from_secs(30);
        // Never connected, not failing over: nothing to wait for.
        assert!(matches!(futures::poll!(pin!(current.get_or_failover(far))), Poll::Ready(None)));

        // A working link was lost: a caller waits for the next one and gets it.
        current.set_failing_over(true);
        let mut waiting = pin!(current.get_or_failover(far));
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "a caller gave up while failing over");
        let (link, connection) = open_link().await;
        current.set(Some((link.clone(), "node-b:5672".to_owned())));
        current.set_failing_over(false);
        let got = waiting.await.expect("the caller did not get the next link");
        assert_eq!(got.rpc.id(), link.rpc.id());

        // Every node refused: the failover ends and a waiting caller gets none at once.
        current.set(None);
        current.set_failing_over(true);
        let mut waiting = pin!(current.get_or_failover(far));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        current.set_failing_over(false);
        assert!(matches!(futures::poll!(waiting.as_mut()), Poll::Ready(None)), "still waiting after the failover");

        // A failover that outlasts the caller's deadline: none at the deadline.
        current.set_failing_over(true);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(current.get_or_failover(soon).await.is_none());
        connection.close(200, "done".into()).await.unwrap();
    }
}
