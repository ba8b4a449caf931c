//! What a consumer refuses to hold: message bodies over `max_message_bytes` are parked unread,
//! and a dead-letter queue is bounded, a full one keeping the failing message in its own queue
//! (retried with backoff) rather than losing it.
//!
//! The machine's broker accepts large messages (RabbitMQ's default limit is 128 MiB), so the
//! consumer's own check is what these tests exercise.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use serde_json::json;
use shared::{
    BrokerConfig, CancellationToken, EventFailure, Listener, MessageContext, Server, ServerConfig, State, retry,
    topology::{self, DlqLimits},
};

use crate::{DEADLINE, Fixture, ToldToFail, delete_queue_and_failure_queues};

/// A request packet for `{cmd:"echo"}` whose encoding is exactly `size` bytes long.
fn echo_packet_of(size: usize, id: &str) -> Vec<u8> {
    let encode = |text: &str| {
        serde_json::to_vec(&json!({"pattern": {"cmd": "echo"}, "data": {"text": text}, "id": id})).unwrap()
    };
    let overhead = encode("").len();
    assert!(size > overhead, "a packet cannot be smaller than {overhead} bytes");
    let packet = encode(&"x".repeat(size - overhead));
    assert_eq!(packet.len(), size);
    packet
}

fn request_properties(reply_to: &str, correlation_id: &str) -> BasicProperties {
    BasicProperties::default().with_reply_to(reply_to.into()).with_correlation_id(correlation_id.into())
}

#[tokio::test]
async fn an_oversized_request_is_answered_413_and_parked_unread() {
    let fixture = Fixture::start_with(|mut config| {
        config.max_message_bytes = 1024;
        config
    })
    .await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let caller = tests::unique("caller");
    probe.declare_queue(&caller).await;

    // At the limit: served.
    let fits = echo_packet_of(1024, "fits");
    probe.publish_raw("", &fixture.queue, &fits, request_properties(&caller, "call-fits")).await;
    let reply = probe.wait_for_message(&caller, DEADLINE).await;
    assert_eq!(reply.correlation_id.as_deref(), Some("call-fits"));
    let reply = reply.json();
    let text = reply["response"]["text"].as_str().unwrap_or_else(|| panic!("not served: {reply}"));
    assert!(!text.is_empty() && text.chars().all(|c| c == 'x'), "{reply}");

    // One byte over: answered 413 at once, never handed to the handler, parked as it came.
    let over = echo_packet_of(1025, "over");
    probe.publish_raw("", &fixture.queue, &over, request_properties(&caller, "call-over")).await;
    let reply = probe.wait_for_message(&caller, DEADLINE).await;
    assert_eq!(reply.correlation_id.as_deref(), Some("call-over"));
    let reply = reply.json();
    assert_eq!(reply["isDisposed"], json!(true), "{reply}");
    assert_eq!(reply["err"]["status"], json!(413), "{reply}");
    assert!(reply.get("response").is_none(), "the oversized request was served: {reply}");
    let message = reply["err"]["message"].as_str().unwrap();
    assert!(message.starts_with("message too large: message body of 1025 bytes"), "{message}");

    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.body, over);
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("too-large")));
    let error = parked.header(retry::ERROR_HEADER).and_then(|error| error.as_str()).unwrap_or_default();
    assert!(error.contains("1025 bytes") && error.contains("1024"), "{error}");
    assert_eq!(parked.header(retry::SERVICE_HEADER), Some(&json!("transport-test")));

    let reply = fixture.client.send(&crate::Echo { text: "still serving".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(reply.text, "still serving");
    probe.assert_empty(&fixture.dlq()).await;
    probe.delete_queues(&[&caller]).await;
}

#[tokio::test]
async fn an_event_over_the_default_limit_is_parked_and_never_handled() {
    let fixture = Fixture::start().await;
    assert_eq!(shared::server::DEFAULT_MAX_MESSAGE_BYTES, 256 * 1024);
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    // A well-formed ping, padded past 256 KiB with a field the contract ignores.
    let big =
        serde_json::to_vec(&json!({"pattern": "test.ping", "data": {"n": 1, "pad": "p".repeat(300 * 1024)}})).unwrap();
    probe.publish_raw(&fixture.exchange, "test.ping", &big, BasicProperties::default()).await;
    let parked = probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    assert_eq!(parked.body.len(), big.len());
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("too-large")));

    // A small ping after it is handled, and it is the only one the handler ever saw.
    fixture.client.emit(&crate::Ping { n: 2 }).await.unwrap();
    tests::eventually(DEADLINE, || async {
        let pings = fixture.recorder.pings.lock().unwrap();
        if pings.is_empty() { Err("the small ping is not handled yet") } else { Ok(()) }
    })
    .await;
    let handled: Vec<u32> = fixture.recorder.pings.lock().unwrap().iter().map(|(ping, _)| ping.n).collect();
    assert_eq!(handled, [2]);
    probe.assert_empty(&fixture.dlq()).await;
}

/// Every delivery of a permanently failing event: when, and which one (its `tag`).
#[derive(Default)]
struct Deliveries(Mutex<Vec<(Instant, String)>>);

#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Tagged {
    tag: String,
}

impl shared::Event for Tagged {
    const PATTERN: &'static str = "test.tagged";
}

async fn always_fails(
    State(seen): State<Arc<Deliveries>>,
    _ctx: MessageContext,
    event: Tagged,
) -> Result<(), EventFailure> {
    seen.0.lock().unwrap().push((Instant::now(), event.tag));
    Err(EventFailure::permanent(ToldToFail))
}

#[tokio::test]
async fn a_full_dead_letter_queue_keeps_the_message_in_its_queue_with_backoff_until_there_is_room() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("bounded");
    let dlq = topology::dlq_name(&queue);
    let mut config = ServerConfig::new(BrokerConfig::new(&amqp_url, "bounded-test"), "bounded-test");
    config.dlq = DlqLimits { max_length: 1, max_bytes: 1024 * 1024 };
    let policy = config.retry.clone();
    let seen = Arc::new(Deliveries::default());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = Server::new(Arc::clone(&seen))
        .event(always_fails)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");

    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    for tag in ["a", "b"] {
        let body = serde_json::to_vec(&json!({"pattern": "test.tagged", "data": {"tag": tag}})).unwrap();
        probe.publish_raw("", &queue, &body, BasicProperties::default()).await;
    }
    // One fits in the DLQ; the other is refused there, handed back and tried again after a
    // pause that doubles each time from 100 ms (jittered into [d/2, d]; the other message's
    // successful parking may reset it once at the start): every pause is at least 50 ms, and
    // the fifth at least 200 ms. Without the pause they would take milliseconds.
    let (refused_tag, times) = tests::eventually(DEADLINE, || async {
        let deliveries = seen.0.lock().unwrap().clone();
        // The refused one is the one that keeps coming back.
        for tag in ["a", "b"] {
            let times: Vec<Instant> = deliveries.iter().filter(|(_, t)| t == tag).map(|(at, _)| *at).collect();
            if times.len() >= 6 {
                return Ok((tag.to_owned(), times));
            }
        }
        Err(format!("{} deliveries so far", deliveries.len()))
    })
    .await;
    let pauses: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(pauses.iter().all(|pause| *pause >= Duration::from_millis(50)), "a redelivery without a pause: {pauses:?}");
    assert!(pauses[4] >= Duration::from_millis(200), "the pause does not grow: {pauses:?}");
    assert_eq!(probe.message_count(&dlq).await, 1, "the bounded DLQ holds one message");

    // Room in the DLQ: the refused message, never lost, is parked now.
    let first = probe.get(&dlq).await.expect("the DLQ holds the first parked message");
    assert_ne!(first.json()["data"]["tag"], json!(refused_tag));
    let second = probe.wait_for_message(&dlq, DEADLINE).await;
    assert_eq!(second.json()["data"]["tag"], json!(refused_tag));
    assert_eq!(second.header(retry::FAILURE_HEADER), Some(&json!("permanent")));
    probe.assert_empty(&queue).await;

    shutdown.cancel();
    server.stopped().await;
    delete_queue_and_failure_queues(&probe, &queue, &policy).await;
}

#[tokio::test]
async fn an_unbounded_dlq_from_an_older_version_is_kept_and_still_used() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("olddlq");
    let dlq = topology::dlq_name(&queue);
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    // What an older version declared: a DLQ without arguments. Declaring it bounded now is
    // refused by the broker (PRECONDITION_FAILED); the server must start anyway.
    probe.declare_queue(&dlq).await;
    let config = ServerConfig::new(BrokerConfig::new(&amqp_url, "olddlq-test"), "olddlq-test");
    let policy = config.retry.clone();
    let seen = Arc::new(Deliveries::default());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = Server::new(Arc::clone(&seen))
        .event(always_fails)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not start next to an unbounded DLQ");
    let body = serde_json::to_vec(&json!({"pattern": "test.tagged", "data": {"tag": "old"}})).unwrap();
    probe.publish_raw("", &queue, &body, BasicProperties::default()).await;
    let parked = probe.wait_for_message(&dlq, DEADLINE).await;
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("permanent")));
    shutdown.cancel();
    server.stopped().await;
    delete_queue_and_failure_queues(&probe, &queue, &policy).await;
}
