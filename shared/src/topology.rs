//! Names and declarations of what the transport puts on the broker (ARCHITECTURE §4).
//!
//! Queues that NestJS peers also assert (`user_queue`, `notification_queue`) are declared
//! durable with **no arguments**, so a NestJS client asserting `{durable:true}` never gets
//! PRECONDITION_FAILED. Retries and dead-lettering therefore work by republishing into queues
//! owned by the consumer: `<queue>.retry.<ms>` (a TTL that dead-letters back into `<queue>`)
//! and `<queue>.dlq`.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

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
pub async fn declare_failure_queues(channel: &Channel, queue: &str, delays: &[Duration]) -> Result<(), lapin::Error> {
    declare_queue(channel, &dlq_name(queue), true).await?;
    for delay in delays {
        let mut arguments = FieldTable::default();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(retry_queue_name(queue, *delay).into(), options, arguments).await?;
    }
    Ok(())
}
