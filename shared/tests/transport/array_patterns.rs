//! Array patterns (NestJS accepts any JSON value as a pattern) route by their normalised form:
//! items kept apart, and a string holding array text routes like the array.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Listener, Request, RpcException, SendOptions, Server,
    ServerConfig,
};

use crate::DEADLINE;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OneTwo {}

impl Request for OneTwo {
    type Response = String;
    const PATTERN: &'static str = "[1,2]";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Twelve {}

impl Request for Twelve {
    type Response = String;
    const PATTERN: &'static str = "[12]";
}

async fn one_two(_: OneTwo) -> Result<String, RpcException> {
    Ok("[1,2]".into())
}

async fn twelve(_: Twelve) -> Result<String, RpcException> {
    Ok("[12]".into())
}

#[tokio::test]
async fn array_patterns_keep_their_items_apart_and_a_string_holding_array_text_routes_like_the_array() {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("array-patterns");
    let shutdown = CancellationToken::new();
    let config = ServerConfig::new(BrokerConfig::new(&amqp_url, "array-patterns-server"), "array-patterns");
    let policy = config.retry.clone();
    let server = Server::new(())
        .request(one_two)
        .request(twelve)
        .listen(Listener::queue(&queue))
        .start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(&amqp_url, "array-patterns-client"))
            .queue(queue.clone())
            .timeout(Duration::from_secs(5)),
        shutdown.clone(),
    );
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    for (pattern, handler) in [
        (json!([1, 2]), "[1,2]"),
        (json!([12]), "[12]"),
        // Strings holding array text without escapes: parsed, not taken as they are.
        (json!("[1, 2]"), "[1,2]"),
        (json!("[ 12 ]"), "[12]"),
    ] {
        let answer = client.send_raw(&pattern, &json!({}), SendOptions::default()).await;
        assert_eq!(answer.ok(), Some(json!(handler)), "the pattern {pattern} reached the wrong handler, or none");
    }

    shutdown.cancel();
    server.stopped().await;
    let probe = tests::BrokerProbe::connect(&amqp_url).await;
    crate::delete_queue_and_failure_queues(&probe, &queue, &policy).await;
}
