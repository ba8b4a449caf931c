//! `emit` reports what happened to the event: `Unavailable` without a broker, `Nacked` when
//! the broker refuses to store it.

use std::time::{Duration, Instant};

use lapin::{
    Connection, ConnectionProperties,
    options::{QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, EmitError};

use crate::{DEADLINE, Ping};

fn client(url: &str, exchange: &str, shutdown: &CancellationToken) -> Client {
    let config = ClientConfig::new(BrokerConfig::new(url, "emit-errors-test")).events_exchange(exchange);
    Client::start(config, shutdown.clone())
}

#[tokio::test]
async fn emit_returns_unavailable_when_the_broker_is_down() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let proxy = tests::ChaosProxy::in_front_of(&amqp_url).await;
    let exchange = tests::unique("events");
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    probe.declare_topic_exchange(&exchange).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = client(&proxy.url_for(&amqp_url), &exchange, &shutdown);
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    client.emit(&Ping { n: 1 }).await.unwrap();

    proxy.cut().await;
    let started = Instant::now();
    let error = client.emit(&Ping { n: 2 }).await.unwrap_err();
    assert!(matches!(error, EmitError::Unavailable { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failing took {:?}", started.elapsed());
    // Later emits fail fast too until the link is back, then succeed again.
    let error = client.emit(&Ping { n: 3 }).await.unwrap_err();
    assert!(matches!(error, EmitError::Unavailable { .. }), "{error:?}");
    proxy.restore();
    tests::eventually(DEADLINE, || client.emit(&Ping { n: 4 })).await;
    probe.delete_exchange(&exchange).await;
}

#[tokio::test]
async fn emit_returns_nacked_when_the_broker_refuses_the_event() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let exchange = tests::unique("events");
    let full = tests::unique("full");
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    probe.declare_topic_exchange(&exchange).await;
    // A queue that refuses every message: RabbitMQ nacks a publish it cannot store.
    let admin = Connection::connect(&amqp_url, ConnectionProperties::default()).await.unwrap();
    let channel = admin.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    channel.queue_declare(full.as_str().into(), QueueDeclareOptions::default(), arguments).await.unwrap();
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(full.as_str().into(), exchange.as_str().into(), "test.ping".into(), bind, FieldTable::default())
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = client(&amqp_url, &exchange, &shutdown);
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    let error = client.emit(&Ping { n: 1 }).await.unwrap_err();
    assert!(matches!(error, EmitError::Nacked), "{error:?}");
    // A nack is about that event, not the link: the client stays usable.
    assert!(client.is_connected());
    let error = client.emit(&Ping { n: 2 }).await.unwrap_err();
    assert!(matches!(error, EmitError::Nacked), "{error:?}");

    probe.delete_queues(&[&full]).await;
    probe.delete_exchange(&exchange).await;
    let _closed = admin.close(200, "done".into()).await;
}

#[tokio::test]
async fn an_emit_the_broker_closes_the_channel_over_fails_and_the_next_one_succeeds() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let exchange = tests::unique("events");
    let observer = tests::unique("observer");
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    probe.declare_topic_exchange(&exchange).await;
    probe.declare_queue(&observer).await;
    probe.bind(&observer, &exchange, "test.ping").await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = client(&amqp_url, &exchange, &shutdown);
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    // Publishing to a missing exchange is a channel error: the broker closes the events
    // channel (NOT_FOUND), and the emit fails.
    let missing = shared::EmitOptions {
        target: Some(shared::EmitTarget::Exchange(tests::unique("missing"))),
        ..shared::EmitOptions::default()
    };
    let error = client.emit_with(&Ping { n: 1 }, missing).await.unwrap_err();
    assert!(matches!(error, EmitError::Unavailable { .. }), "{error:?}");
    // The client rebuilds its link: the next emits go through again.
    tests::eventually(DEADLINE, || client.emit(&Ping { n: 2 })).await;
    let message = probe.wait_for_message(&observer, DEADLINE).await;
    assert_eq!(message.body, br#"{"pattern":"test.ping","data":{"n":2}}"#);
    probe.delete_queues(&[&observer]).await;
    probe.delete_exchange(&exchange).await;
}
