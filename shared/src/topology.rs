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

/// Declares the consumer-owned queues of `queue`: its DLQ and one delay queue per delay.
pub async fn declare_failure_queues(
    channel: &Channel,
    queue: &str,
    delays: &[Duration],
    queue_type: QueueType,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(dlq_name(queue).into(), options, dlq_arguments(queue_type)).await?;
    for delay in delays {
        let arguments = retry_arguments(queue, *delay, queue_type);
        channel.queue_declare(retry_queue_name(queue, *delay).into(), options, arguments).await?;
    }
    Ok(())
}

/// The arguments of a dead-letter queue (what `mq topology check` and the AsyncAPI document expect).
pub fn dlq_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    arguments
}

/// A delay queue: its TTL dead-letters the message back into `queue`.
pub fn retry_arguments(queue: &str, delay: Duration, queue_type: QueueType) -> FieldTable {
    let mut arguments = dlq_arguments(queue_type);
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
        assert!(dlq_arguments(QueueType::Classic).inner().is_empty());
    }
}
