//! What the server declares: the consumed queue durable and without arguments (what NestJS
//! peers assert), the delay queues with their TTL dead-lettering back into it, the dead-letter
//! queue bounded.

use lapin::{
    Connection, ConnectionProperties,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};

use crate::Fixture;

/// Declares `queue` as given on a throwaway channel: Ok when it matches the existing queue,
/// the broker's refusal (PRECONDITION_FAILED) otherwise.
async fn declare(
    connection: &Connection,
    queue: &str,
    durable: bool,
    arguments: FieldTable,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { durable, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), options, arguments).await.map(drop)
}

#[tokio::test]
async fn the_consumed_queue_is_durable_without_arguments_and_delay_queues_return_to_it() {
    let fixture = Fixture::start().await;
    let connection = Connection::connect(&fixture.amqp_url, ConnectionProperties::default()).await.unwrap();
    // What a NestJS client asserts with `queueOptions: {durable: true}`.
    declare(&connection, &fixture.queue, true, FieldTable::default()).await.expect("a NestJS peer's assert fails");
    let mut with_arguments = FieldTable::default();
    with_arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000));
    assert!(declare(&connection, &fixture.queue, true, with_arguments).await.is_err(), "the queue has arguments");
    assert!(declare(&connection, &fixture.queue, false, FieldTable::default()).await.is_err(), "not durable");

    // fast_retry(3): 50 ms then 100 ms, each dead-lettering into the consumed queue.
    for delay in [50, 100] {
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(fixture.queue.as_str().into()));
        let name = format!("{}.retry.{delay}ms", fixture.queue);
        declare(&connection, &name, true, arguments).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The DLQ: durable, bounded, refusing what exceeds the bounds (DlqLimits::default()).
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongLongInt(10_000));
    bounded.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(64 * 1024 * 1024));
    bounded.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    declare(&connection, &fixture.dlq(), true, bounded).await.expect("the DLQ is durable and bounded");
    assert!(declare(&connection, &fixture.dlq(), true, FieldTable::default()).await.is_err(), "the DLQ is unbounded");
    let _closed = connection.close(200, "done".into()).await;
}
