//! `Client::shutdown` against a live broker: it stops this client's link, not its siblings'.

use std::time::Duration;

use shared::{Client, ClientConfig, RpcError, SendOptions};

use crate::{DEADLINE, Echo, Fixture};

#[tokio::test]
async fn shutdown_closes_this_clients_link_and_fails_its_calls_while_a_sibling_on_its_token_keeps_serving() {
    let fixture = Fixture::start().await;
    // A sibling started with the same shutdown token: Client::shutdown must leave it alone.
    let sibling = Client::start(
        ClientConfig::new(shared::BrokerConfig::new(&fixture.amqp_url, "transport-test-sibling"))
            .queue(fixture.queue.clone())
            .timeout(Duration::from_secs(5)),
        fixture.client_shutdown.clone(),
    );
    assert!(sibling.wait_connected(DEADLINE).await, "the sibling did not connect");
    let client = fixture.client.clone();
    let in_flight = tokio::spawn(async move {
        let options = SendOptions { timeout: Some(Duration::from_secs(30)), ..Default::default() };
        client.send_with(&Echo { text: "cut short".into(), delay_ms: 3000 }, options).await
    });
    tokio::time::timeout(DEADLINE, fixture.recorder.echo_started.notified()).await.expect("the handler never started");

    tokio::time::timeout(Duration::from_secs(5), fixture.client.shutdown()).await.expect("shutdown returns in time");
    // shutdown returned only once the client was closed: its link is gone, nothing to wait for.
    assert!(!fixture.client.is_connected(), "the client is still connected after shutdown");
    assert_eq!(fixture.client.node(), None);
    tokio::time::timeout(Duration::from_millis(100), fixture.client.closed())
        .await
        .expect("closed() resolves at once after shutdown returned");
    let cut =
        tokio::time::timeout(Duration::from_secs(1), in_flight).await.expect("the call outlived its client").unwrap();
    assert!(matches!(cut, Err(RpcError::Unavailable { .. })), "{cut:?}");
    let late = fixture.client.send(&Echo { text: "late".into(), delay_ms: 0 }).await.unwrap_err();
    assert!(matches!(late, RpcError::Unavailable { .. }), "{late:?}");

    assert!(!fixture.client_shutdown.is_cancelled(), "the shared token is left alone");
    assert!(sibling.is_connected());
    let answer = sibling.send(&Echo { text: "still here".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(answer.text, "still here");
}
