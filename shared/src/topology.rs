//! Names and declarations of what the transport puts on the broker (ARCHITECTURE §4).
//!
//! Queues that NestJS peers also assert (`user_queue`, `notification_queue`) are declared
//! durable with **no arguments**, so a NestJS client asserting `{durable:true}` never gets
//! PRECONDITION_FAILED. Retries and dead-lettering therefore work by republishing into queues
//! owned by the consumer: `<queue>.retry.<ms>` (a TTL that dead-letters back into `<queue>`)
//! and `<queue>.dlq`.
//!
//! On a cluster ([`QueueType::Quorum`]) the consumer-owned queues are declared quorum queues,
//! and the delay queues dead-letter *at least once* (`x-dead-letter-strategy`, which quorum
//! queues support only with `x-overflow: reject-publish`): a message whose delay expired is
//! removed from the delay queue only once the main queue has confirmed it, so a node lost in
//! between cannot drop it. The shared queues keep no arguments either way: they become quorum
//! queues through the virtual host's default queue type (`rabbitmqctl add_vhost NAME
//! --default-queue-type quorum`), which an argument-less declaration by a NestJS peer or by
//! us then creates and re-declares without PRECONDITION_FAILED.
//!
//! A dead-letter queue is bounded ([`DlqLimits`]: `x-max-length`, `x-max-length-bytes`) with
//! `x-overflow: reject-publish`: once full, the broker refuses (nacks) a message being parked
//! rather than dropping the oldest parked one (`drop-head` would lose evidence silently). The
//! transport then keeps the refused message in its own queue and tries again with backoff, so
//! a full DLQ slows the failing messages down instead of losing them; emptying the DLQ lets
//! them in. Both queue types support `reject-publish`.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

/// The kind of queue the transport declares for the queues it owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// No `x-queue-type`: the virtual host's default (classic unless configured otherwise).
    #[default]
    Classic,
    /// Replicated quorum queues, for a cluster whose virtual host defaults to quorum.
    Quorum,
}

/// How much a dead-letter queue holds before it refuses more (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlqLimits {
    /// Messages at most (`x-max-length`).
    pub max_length: u32,
    /// Bytes of message bodies at most (`x-max-length-bytes`).
    pub max_bytes: u64,
}

impl Default for DlqLimits {
    /// 10 000 messages or 64 MiB, whichever comes first.
    fn default() -> Self {
        Self { max_length: 10_000, max_bytes: 64 * 1024 * 1024 }
    }
}

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The dead-letter queue of `queue`.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The delay queue that holds a message of `queue` for `delay` before returning it.
/// The delay is part of the name: changing the schedule declares new queues instead of
/// colliding with the arguments of old ones.
pub fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

/// Declares a queue without arguments (what NestJS peers expect).
pub async fn declare_queue(channel: &Channel, name: &str, durable: bool) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions { durable, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), options, FieldTable::default()).await.map(drop)
}

/// Declares a durable topic exchange (the events exchange).
pub async fn declare_topic_exchange(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), ExchangeKind::Topic, options, FieldTable::default()).await
}

/// Binds `queue` to `exchange` for one routing key (an event pattern).
pub async fn bind(channel: &Channel, queue: &str, exchange: &str, routing_key: &str) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares the dead-letter queue of `queue`, bounded by `limits`.
pub async fn declare_dlq(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
    limits: DlqLimits,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let arguments = bounded_dlq_arguments(queue_type, limits);
    channel.queue_declare(dlq_name(queue).into(), options, arguments).await.map(drop)
}

/// Declares the delay queues of `queue`, one per delay.
pub async fn declare_delay_queues(
    channel: &Channel,
    queue: &str,
    delays: &[Duration],
    queue_type: QueueType,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for delay in delays {
        let arguments = retry_arguments(queue, *delay, queue_type);
        channel.queue_declare(retry_queue_name(queue, *delay).into(), options, arguments).await?;
    }
    Ok(())
}

/// Declares the consumer-owned queues of `queue`: its DLQ and one delay queue per delay.
pub async fn declare_failure_queues(
    channel: &Channel,
    queue: &str,
    delays: &[Duration],
    queue_type: QueueType,
    limits: DlqLimits,
) -> Result<(), lapin::Error> {
    declare_dlq(channel, queue, queue_type, limits).await?;
    declare_delay_queues(channel, queue, delays, queue_type).await
}

/// The arguments of a dead-letter queue with the default [`DlqLimits`] (what `mq topology
/// check` and the AsyncAPI document expect of a service on its default settings).
pub fn dlq_arguments(queue_type: QueueType) -> FieldTable {
    bounded_dlq_arguments(queue_type, DlqLimits::default())
}

/// The arguments of a dead-letter queue: its type, and its bounds with what exceeds them refused.
pub fn bounded_dlq_arguments(queue_type: QueueType, limits: DlqLimits) -> FieldTable {
    let mut arguments = type_arguments(queue_type);
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(limits.max_length)));
    let bytes = i64::try_from(limits.max_bytes).unwrap_or(i64::MAX);
    arguments.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(bytes));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    arguments
}

fn type_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    arguments
}

/// A delay queue: its TTL dead-letters the message back into `queue`.
pub fn retry_arguments(queue: &str, delay: Duration, queue_type: QueueType) -> FieldTable {
    let mut arguments = type_arguments(queue_type);
    let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
    if queue_type == QueueType::Quorum {
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_delay_queues_dead_letter_at_least_once() {
        let quorum = retry_arguments("q", Duration::from_millis(250), QueueType::Quorum);
        let keys: Vec<&str> = quorum.inner().keys().map(|key| key.as_str()).collect();
        assert!(keys.contains(&"x-queue-type") && keys.contains(&"x-dead-letter-strategy"), "{keys:?}");
        assert!(keys.contains(&"x-overflow"), "{keys:?}");
        let classic = retry_arguments("q", Duration::from_millis(250), QueueType::Classic);
        assert!(!classic.inner().contains_key("x-queue-type"));
        assert!(!classic.inner().contains_key("x-max-length"), "delay queues are not bounded: {classic:?}");
    }

    #[test]
    fn dead_letter_queues_are_bounded_and_refuse_when_full() {
        let limits = DlqLimits { max_length: 7, max_bytes: 4096 };
        for queue_type in [QueueType::Classic, QueueType::Quorum] {
            let arguments = bounded_dlq_arguments(queue_type, limits);
            let table = arguments.inner();
            assert_eq!(table.get("x-max-length"), Some(&AMQPValue::LongLongInt(7)));
            assert_eq!(table.get("x-max-length-bytes"), Some(&AMQPValue::LongLongInt(4096)));
            assert_eq!(table.get("x-overflow"), Some(&AMQPValue::LongString("reject-publish".into())));
            assert_eq!(table.contains_key("x-queue-type"), queue_type == QueueType::Quorum);
        }
        assert_eq!(dlq_arguments(QueueType::Classic), bounded_dlq_arguments(QueueType::Classic, DlqLimits::default()));
    }
}
