//! A RabbitMQ probe for tests: look into queues, publish raw messages, set up and tear down
//! topology, all on a connection of its own.
//!
//! Every method panics with context when RabbitMQ refuses what it asks (they are assertions
//! in a test), except the `delete_*` cleanups, which are best effort.

pub mod fields;
mod message;

use std::{sync::Mutex, time::Duration};

pub use message::ProbedMessage;

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};

use crate::{eventually_some, infra};

/// A connection to RabbitMQ for inspecting and driving it from a test.
///
/// It keeps one channel in publisher-confirm mode and replaces it when RabbitMQ closed it
/// (as it does after a failed passive declare), so one failed check does not break the
/// probe. It never consumes with a long-lived consumer: reads are `basic.get` + ack.
pub struct BrokerProbe {
    connection: Connection,
    channel: Mutex<Option<Channel>>,
}

impl BrokerProbe {
    /// Connects to the RabbitMQ from [`infra::amqp_url`].
    ///
    /// # Panics
    /// When RabbitMQ cannot be reached.
    pub async fn new() -> BrokerProbe {
        BrokerProbe::connect(&infra::amqp_url().await).await
    }

    /// Connects to the RabbitMQ at `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
    ///
    /// # Panics
    /// When RabbitMQ cannot be reached.
    pub async fn connect(url: &str) -> BrokerProbe {
        let properties = ConnectionProperties::default().with_connection_name("test-kit-probe".into());
        let connection = Connection::connect(url, properties)
            .await
            .unwrap_or_else(|error| panic!("probe cannot connect to {url}: {error}"));
        BrokerProbe { connection, channel: Mutex::new(None) }
    }

    /// The probe's channel, opened (with publisher confirms) if there is no open one.
    async fn channel(&self) -> Channel {
        let cached = self.channel.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(channel) = cached.filter(|channel| channel.status().connected()) {
            return channel;
        }
        let channel = self.fresh_channel().await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|error| panic!("probe cannot enable publisher confirms: {error}"));
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = Some(channel.clone());
        channel
    }

    /// A new channel for an operation that may get it closed by RabbitMQ.
    async fn fresh_channel(&self) -> Channel {
        self.connection.create_channel().await.unwrap_or_else(|error| panic!("probe cannot open a channel: {error}"))
    }

    /// Whether the queue exists (a passive declare, on a throwaway channel).
    pub async fn queue_exists(&self, queue: &str) -> bool {
        let channel = self.fresh_channel().await;
        let declared =
            channel.queue_declare(queue.into(), QueueDeclareOptions::default().passive(), FieldTable::default()).await;
        if declared.is_ok() {
            let _closed = channel.close(200, "probe done".into()).await;
        }
        declared.is_ok()
    }

    /// The number of ready messages in `queue` (not counting unacknowledged ones).
    ///
    /// # Panics
    /// When the queue does not exist.
    pub async fn message_count(&self, queue: &str) -> u32 {
        let channel = self.fresh_channel().await;
        let declared = channel
            .queue_declare(queue.into(), QueueDeclareOptions::default().passive(), FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("queue {queue} cannot be inspected: {error}"));
        let _closed = channel.close(200, "probe done".into()).await;
        declared.message_count()
    }

    /// Takes the next message off `queue` (and acknowledges it), or `None` if it is empty.
    ///
    /// # Panics
    /// When the queue does not exist.
    pub async fn get(&self, queue: &str) -> Option<ProbedMessage> {
        let channel = self.channel().await;
        let got = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap_or_else(|error| panic!("cannot get from queue {queue}: {error}"))?;
        let message = ProbedMessage::from(&got.delivery);
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap_or_else(|error| panic!("cannot ack a message from {queue}: {error}"));
        Some(message)
    }

    /// Waits for a message on `queue`, polling with [`eventually_some`], takes it off the
    /// queue and returns it.
    ///
    /// # Panics
    /// When no message arrives within `deadline`, or the queue does not exist.
    pub async fn wait_for_message(&self, queue: &str, deadline: Duration) -> ProbedMessage {
        eventually_some(deadline, || self.get(queue)).await
    }

    /// Asserts that `queue` holds no ready message.
    ///
    /// # Panics
    /// When it does (telling how many), or the queue does not exist.
    pub async fn assert_empty(&self, queue: &str) {
        let count = self.message_count(queue).await;
        assert_eq!(count, 0, "queue {queue} should be empty but holds {count} message(s)");
    }

    /// Declares a durable, non-exclusive queue (idempotent when it already exists with
    /// the same settings).
    ///
    /// # Panics
    /// When RabbitMQ refuses (e.g. it exists with other settings, or a name is unknown).
    pub async fn declare_queue(&self, name: &str) {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.channel()
            .await
            .queue_declare(name.into(), options, FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("cannot declare queue {name}: {error}"));
    }

    /// Declares a durable topic exchange (idempotent when it already exists as such).
    ///
    /// # Panics
    /// When RabbitMQ refuses (e.g. it exists with other settings, or a name is unknown).
    pub async fn declare_topic_exchange(&self, name: &str) {
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        self.channel()
            .await
            .exchange_declare(name.into(), ExchangeKind::Topic, options, FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("cannot declare exchange {name}: {error}"));
    }

    /// Binds `queue` to `exchange` with `routing_key` (a pattern for topic exchanges).
    ///
    /// # Panics
    /// When RabbitMQ refuses (e.g. it exists with other settings, or a name is unknown).
    pub async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.channel()
            .await
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|error| panic!("cannot bind {queue} to {exchange} ({routing_key}): {error}"));
    }

    /// Publishes `body` with `properties` as given (nothing added), as a mandatory message,
    /// and waits for RabbitMQ's publisher confirm. Returns whether it was routed to at least
    /// one queue (`false`: RabbitMQ returned it as unroutable).
    ///
    /// # Panics
    /// When RabbitMQ refuses (nacks) the message or the publish fails.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> bool {
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirmation = self
            .channel()
            .await
            .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
            .await
            .unwrap_or_else(|error| panic!("cannot publish to {exchange} ({routing_key}): {error}"))
            .await
            .unwrap_or_else(|error| panic!("no confirm for {exchange} ({routing_key}): {error}"));
        assert!(confirmation.is_ack(), "RabbitMQ nacked the message to {exchange} ({routing_key})");
        confirmation.take_message().is_none()
    }

    /// Deletes the queues, whatever they hold; missing queues and failures are ignored.
    pub async fn delete_queues(&self, queues: &[&str]) {
        for queue in queues {
            let Ok(channel) = self.connection.create_channel().await else {
                return;
            };
            if channel.queue_delete((*queue).into(), QueueDeleteOptions::default()).await.is_ok() {
                let _closed = channel.close(200, "probe done".into()).await;
            }
        }
    }

    /// Deletes the exchange; a missing exchange and failures are ignored.
    pub async fn delete_exchange(&self, name: &str) {
        let Ok(channel) = self.connection.create_channel().await else {
            return;
        };
        if channel.exchange_delete(name.into(), ExchangeDeleteOptions::default()).await.is_ok() {
            let _closed = channel.close(200, "probe done".into()).await;
        }
    }
}
