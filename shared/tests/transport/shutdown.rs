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
