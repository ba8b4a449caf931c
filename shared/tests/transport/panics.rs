//! A panicking handler is an internal error (requests) or a transient failure (events), not a
//! dead consumer.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Event, EventFailure, Listener, MessageContext, Request,
    RpcError, RpcException, Server, ServerConfig, State, retry, topology, wire::INTERNAL_ERROR_MESSAGE,
};

use crate::{DEADLINE, fast_retry};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Explode {
    really: bool,
}

impl Request for Explode {
    type Response = String;
    const PATTERN: &'static str = r#"{"cmd":"explode"}"#;
}

impl Event for Explode {
    const PATTERN: &'static str = "test.explode";
}

async fn explode_request(request: Explode) -> Result<String, RpcException> {
    assert!(!request.really, "the request handler panics");
    Ok("calm".into())
}

async fn explode_event(
    State(attempts): State<Arc<AtomicU32>>,
    ctx: MessageContext,
    event: Explode,
) -> Result<(), EventFailure> {
    attempts.fetch_max(ctx.attempt, Ordering::SeqCst);
    assert!(!event.really, "the event handler panics");
    Ok(())
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_or_a_retried_failure_and_the_consumer_keeps_serving() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("panics");
    let attempts = Arc::new(AtomicU32::new(0));
    let mut config = ServerConfig::new(BrokerConfig::new(&amqp_url, "panics-test"), "panics-test");
    config.retry = fast_retry(3);
    let policy = config.retry.clone();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let server = Server::new(Arc::clone(&attempts))
        .request(explode_request)
        .event(explode_event)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let client =
        Client::start(ClientConfig::new(BrokerConfig::new(&amqp_url, "panics-client")).queue(&queue), shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    match client.send(&Explode { really: true }).await {
        Err(RpcError::Remote { error, .. }) => {
            assert_eq!(error.0, json!({"status": "error", "message": INTERNAL_ERROR_MESSAGE}));
        }
        other => panic!("expected the internal error, got {other:?}"),
    }
    // A panicking event handler is a transient failure: retried, then parked as exhausted.
    client.emit(&Explode { really: true }).await.unwrap();
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    let parked = probe.wait_for_message(&topology::dlq_name(&queue), DEADLINE).await;
    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("exhausted")));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let reason = parked.header(retry::ERROR_HEADER).and_then(|v| v.as_str()).unwrap();
    assert!(reason.contains("panicked"), "{reason}");

    assert_eq!(client.send(&Explode { really: false }).await.unwrap(), "calm");
    shutdown.cancel();
    server.stopped().await;
    crate::delete_queue_and_failure_queues(&probe, &queue, &policy).await;
}
