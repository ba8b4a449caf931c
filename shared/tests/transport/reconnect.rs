//! Losing the broker link: fail fast, reconnect, carry on.

use std::time::Duration;

use shared::{RpcError, SendOptions};

use crate::{DEADLINE, Echo, Fixture, Ping};

#[tokio::test]
async fn client_and_server_recover_after_the_broker_link_breaks() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let server_link = tests::ChaosProxy::in_front_of(&amqp_url).await;
    let client_link = tests::ChaosProxy::in_front_of(&amqp_url).await;
    let fixture =
        Fixture::start_on(&server_link.url_for(&amqp_url), &client_link.url_for(&amqp_url), |config| config).await;
    assert_eq!(fixture.client.send(&Echo { text: "before".into(), delay_ms: 0 }).await.unwrap().text, "before");
    assert_eq!(fixture.client.node(), Some(client_link.addr().to_string()), "the node it is connected to");

    // A call in flight when the client's link breaks fails at once, not at its timeout.
    let client = fixture.client.clone();
    let in_flight = tokio::spawn(async move {
        let options = SendOptions { timeout: Some(Duration::from_secs(30)), ..SendOptions::default() };
        let started = std::time::Instant::now();
        (client.send_with(&Echo { text: "slow".into(), delay_ms: 3000 }, options).await, started.elapsed())
    });
    tokio::time::timeout(DEADLINE, fixture.recorder.echo_started.notified()).await.expect("the handler never started");
    client_link.cut().await;
    server_link.cut().await;
    let (result, elapsed) = in_flight.await.unwrap();
    assert!(matches!(result, Err(RpcError::Unavailable { .. })), "{result:?}");
    assert!(elapsed < Duration::from_secs(3), "failing took {elapsed:?}");
    assert!(!fixture.client.is_connected());
    assert_eq!(fixture.client.node(), None, "no node while reconnecting");

    client_link.restore();
    server_link.restore();
    // Everything comes back without a restart: requests and events flow again.
    let after = Echo { text: "after".into(), delay_ms: 0 };
    let reply = tests::eventually(DEADLINE, || fixture.client.send(&after)).await;
    assert_eq!(reply.text, "after");
    assert_eq!(fixture.client.node(), Some(client_link.addr().to_string()));
    assert!(fixture.server.as_ref().unwrap().is_ready());
    tests::eventually(DEADLINE, || fixture.client.emit(&Ping { n: 9 })).await;
    tests::eventually(DEADLINE, || async {
        let pings = fixture.recorder.pings.lock().unwrap().clone();
        if pings.iter().any(|(ping, _)| ping.n == 9) { Ok(()) } else { Err("no ping yet") }
    })
    .await;
}
