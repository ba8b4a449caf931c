//! Graceful shutdown: stop consuming, finish what is in flight, close.

use std::time::Duration;

use crate::{DEADLINE, Echo, Fixture};

#[tokio::test]
async fn shutdown_lets_in_flight_handlers_finish_and_reply() {
    let mut fixture = Fixture::start().await;
    let client = fixture.client.clone();
    let call = tokio::spawn(async move { client.send(&Echo { text: "in flight".into(), delay_ms: 500 }).await });
    tokio::time::timeout(DEADLINE, fixture.recorder.echo_started.notified()).await.expect("the handler never started");
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    let stopping = std::time::Instant::now();
    fixture.stop_server().await;
    assert_eq!(call.await.unwrap().unwrap().text, "in flight", "the in-flight request was answered");
    assert!(stopping.elapsed() < Duration::from_secs(5));

    // Stopped means stopped: a new request is not consumed any more.
    let error = fixture
        .client
        .send_with(
            &Echo { text: "late".into(), delay_ms: 0 },
            shared::SendOptions { timeout: Some(Duration::from_millis(300)), ..Default::default() },
        )
        .await
        .unwrap_err();
    assert!(matches!(error, shared::RpcError::Timeout { .. }), "{error:?}");
    probe.delete_queues(&[&fixture.queue]).await;
}

#[tokio::test]
async fn a_client_whose_token_fires_fails_its_calls_at_once_and_closed_awaits_its_end() {
    let fixture = Fixture::start().await;
    let client = fixture.client.clone();
    let call = tokio::spawn(async move {
        let options = shared::SendOptions { timeout: Some(Duration::from_secs(30)), ..Default::default() };
        client.send_with(&Echo { text: "cut short".into(), delay_ms: 3000 }, options).await
    });
    tokio::time::timeout(DEADLINE, fixture.recorder.echo_started.notified()).await.expect("the handler never started");

    fixture.client_shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), fixture.client.closed()).await.expect("the client did not close");
    let result =
        tokio::time::timeout(Duration::from_secs(1), call).await.expect("the call outlived its client").unwrap();
    assert!(matches!(result, Err(shared::RpcError::Unavailable { .. })), "{result:?}");
    assert!(!fixture.client.is_connected());
    let late = fixture.client.send(&Echo { text: "late".into(), delay_ms: 0 }).await.unwrap_err();
    assert!(matches!(late, shared::RpcError::Unavailable { .. }), "{late:?}");
}
