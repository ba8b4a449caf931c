//! Interop with a real NestJS 11 app (`tests/nest`): a stock `ClientProxy` calls our server,
//! and our client calls a NestJS microservice. They need Node.js 20+ on PATH; the test kit
//! installs the project itself (see `tests::nest::ensure_ready`).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, RpcError, SendOptions,
    contracts::{GetUser, UserCreated},
    wire::{INTERNAL_ERROR_MESSAGE, NO_HANDLER_MESSAGE},
};
use tests::nest::{self, NestServer};

use crate::{DEADLINE, Fixture, Ping};

const NEST_TIMEOUT: Duration = Duration::from_secs(10);
const KNOWN_ID: &str = "4fb7e234-2daa-5fed-bdf6-93f8f482da80";

#[tokio::test]
async fn a_nestjs_client_calls_our_server() {
    let fixture = Fixture::start().await;
    let url = &fixture.amqp_url;
    let ok =
        nest::nest_send(url, &fixture.queue, json!({"cmd": "echo"}), json!({"text": "from nest"}), NEST_TIMEOUT).await;
    assert_eq!(ok.unwrap()["text"], json!("from nest"));

    // Keys in another order than our registration: still routed.
    let failed = nest::nest_send(
        url,
        &fixture.queue,
        json!({"cmd": "fail", "role": "test"}),
        json!({"status": 404}),
        NEST_TIMEOUT,
    )
    .await;
    assert_eq!(failed.unwrap_err(), json!({"status": 404, "message": "told to fail"}));

    let internal =
        nest::nest_send(url, &fixture.queue, json!({"role": "test", "cmd": "fail"}), json!({}), NEST_TIMEOUT).await;
    assert_eq!(internal.unwrap_err(), json!({"status": "error", "message": INTERNAL_ERROR_MESSAGE}));

    let unknown = nest::nest_send(url, &fixture.queue, json!({"cmd": "nope"}), json!({}), NEST_TIMEOUT).await;
    assert_eq!(unknown.unwrap_err(), json!(NO_HANDLER_MESSAGE));

    let many =
        nest::nest_send_many(url, &fixture.queue, json!({"cmd": "echo"}), json!({"text": "x"}), NEST_TIMEOUT, 50).await;
    assert!(many.iter().all(|reply| reply.as_ref().is_ok_and(|v| v["text"] == json!("x"))), "{many:?}");

    nest::nest_emit(url, nest::EmitTarget::Queue(&fixture.queue), "test.ping", json!({"n": 5})).await;
    nest::nest_emit(url, nest::EmitTarget::Exchange(&fixture.exchange), "test.ping", json!({"n": 6})).await;
    tests::eventually(DEADLINE, || async {
        let seen: Vec<u32> = fixture.recorder.pings.lock().unwrap().iter().map(|(Ping { n }, _)| *n).collect();
        if seen.contains(&5) && seen.contains(&6) { Ok(()) } else { Err(format!("pings so far: {seen:?}")) }
    })
    .await;
}

#[tokio::test]
async fn our_client_calls_a_nestjs_server() {
    let url = tests::amqp_url().await;
    let queue = tests::unique("nest_server");
    let exchange = tests::unique("nest_events");
    let mut server = NestServer::start(&url, &queue, Some(&exchange)).await;
    let shutdown = CancellationToken::new();
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(&url, "interop-client"))
            .queue(queue.clone())
            .events_exchange(exchange.clone()),
        shutdown.clone(),
    );
    assert!(client.wait_connected(DEADLINE).await);

    let sum = client.send_raw(&json!({"cmd": "sum"}), &json!([1, 2, 3]), SendOptions::default()).await.unwrap();
    assert_eq!(sum, json!(6));

    let user = client.send(&GetUser { id: KNOWN_ID.into() }).await.unwrap();
    assert_eq!(user.email, "nest@example.com");
    assert_eq!(user.created_at, Utc.with_ymd_and_hms(2024, 1, 1, 0, 7, 0).unwrap());

    match client.send(&GetUser { id: "00000000-0000-0000-0000-000000000000".into() }).await.unwrap_err() {
        RpcError::Remote { error, .. } => assert_eq!(error.0, json!({"status": 404, "message": "user not found"})),
        other => panic!("expected the 404 error object, got {other:?}"),
    }
    match client.send_raw(&json!({"cmd": "boom"}), &json!({}), SendOptions::default()).await.unwrap_err() {
        RpcError::Remote { error, .. } => assert_eq!(error.message(), Some(INTERNAL_ERROR_MESSAGE)),
        other => panic!("expected the internal error object, got {other:?}"),
    }
    let unknown = client.send_raw(&json!({"cmd": "nope"}), &json!({}), SendOptions::default()).await.unwrap_err();
    assert!(matches!(unknown, RpcError::NoHandler { .. }), "{unknown:?}");

    let event = UserCreated {
        id: KNOWN_ID.parse().unwrap(),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 7, 0).unwrap(),
    };
    let expected = json!({"event": "user.created", "data": {"id": KNOWN_ID, "email": "ada@example.com", "name": "Ada", "createdAt": "2024-01-01T00:07:00.000Z"}});
    // Straight to the NestJS server's queue, and through the topic exchange it is bound to.
    let to_queue = EmitOptions { target: Some(EmitTarget::Queue(queue.clone())), ..EmitOptions::default() };
    client.emit_with(&event, to_queue).await.unwrap();
    assert_eq!(server.next_event(DEADLINE).await, expected);
    client.emit(&event).await.unwrap();
    assert_eq!(server.next_event(DEADLINE).await, expected);
    shutdown.cancel();
    tests::BrokerProbe::connect(&url).await.delete_queues(&[&queue]).await;
}
