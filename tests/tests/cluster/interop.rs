//! NestJS peers on the cluster, each given every node's URL (`urls: [three nodes]`).

use std::time::Duration;

use serde_json::json;
use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, contracts::GetUser, contracts::UserCreated};
use tests::nest::{NestServer, nest_send};

use crate::stack::ClusterStack;

/// The id the NestJS interop server knows (any other gets its 404).
const NEST_KNOWN_ID: &str = "4fb7e234-2daa-5fed-bdf6-93f8f482da80";

#[tokio::test]
async fn a_stock_nestjs_client_with_every_node_calls_our_user_service_on_the_cluster() {
    tests::nest::ensure_ready().await;
    let (cluster, _turn) = crate::cluster().await;
    let stack = ClusterStack::start(cluster).await;
    let http = reqwest::Client::new();
    let email = format!("{}@example.com", tests::unique("nest-cluster"));
    let body = json!({"email": email, "password": "correct horse battery", "name": "Nest"});
    let created: serde_json::Value =
        http.post(format!("{}/auth/signup", stack.auth_url)).json(&body).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let urls = cluster.urls();
    let user = tests::eventually(tests::DEADLINE, || async {
        nest_send(&urls, &stack.user_queue, json!({"cmd": "get_user"}), json!({"id": id}), Duration::from_secs(5))
            .await
            .map_err(|error| error.to_string())
    })
    .await;
    assert_eq!(user["email"], email);
    let missing = nest_send(
        &urls,
        &stack.user_queue,
        json!({"cmd": "get_user"}),
        json!({"id": uuid::Uuid::new_v4()}),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(missing["status"], 404, "{missing}");
    // NestJS asserted the queue with no arguments: it is still the quorum queue it was.
    crate::assert_all_quorum(cluster, &stack.queue_prefixes()).await;
    stack.stop().await;
}

#[tokio::test]
async fn our_client_with_every_node_calls_and_notifies_a_nestjs_microservice_on_the_cluster() {
    tests::nest::ensure_ready().await;
    let (cluster, _turn) = crate::cluster().await;
    let (queue, exchange) = (tests::unique("nest_cluster"), tests::unique("nest_cluster_events"));
    let mut nest = NestServer::start(&cluster.urls(), &queue, Some(&exchange)).await;
    let config = ClientConfig::new(BrokerConfig::new(cluster.urls(), "cluster-interop-client"))
        .queue(&queue)
        .events_exchange(&exchange);
    let client = Client::start(config, CancellationToken::new());
    assert!(client.wait_connected(tests::DEADLINE).await);
    assert!(client.node().is_some_and(|node| (0..cluster.size()).any(|index| cluster.address(index) == node)));

    let user = client.send(&GetUser { id: NEST_KNOWN_ID.to_owned() }).await.unwrap();
    assert_eq!(user.id.to_string(), NEST_KNOWN_ID);
    let event: UserCreated = serde_json::from_value(json!({
        "id": uuid::Uuid::new_v4(),
        "email": "nest@example.com",
        "name": "Nest",
        "createdAt": "2026-01-01T00:07:00.000Z",
    }))
    .unwrap();
    client.emit(&event).await.unwrap();
    let received = nest.next_event(tests::DEADLINE).await;
    assert_eq!(received["event"], "user.created");
    assert_eq!(received["data"]["id"], event.id.to_string());
    // The queue NestJS declared with no arguments is a quorum queue (the vhost's default).
    crate::assert_all_quorum(cluster, &[queue.as_str()]).await;
    client.shutdown().await;
}
