//! A stock NestJS 11 client (`{queue, queueOptions:{durable:true}}`) calling get_user.

use serde_json::{Value, json};
use tests::nest::nest_send;
use uuid::Uuid;

use crate::support::{RPC_TIMEOUT, TestApp, new_user};

async fn call(app: &TestApp, pattern: Value, data: Value) -> Result<Value, Value> {
    nest_send(&app.amqp_url, &app.queue, pattern, data, RPC_TIMEOUT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nestjs_client_gets_the_user_and_the_error_objects() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.seed(&user).await;
    let pattern = json!({"cmd": "get_user"});

    let found = call(&app, pattern.clone(), json!({"id": user.id})).await;
    let expected = json!({"id": user.id, "email": user.email, "name": "Ada", "createdAt": "2024-05-01T12:00:00.123Z"});
    assert_eq!(found, Ok(expected));

    let missing = call(&app, pattern.clone(), json!({"id": Uuid::new_v4()})).await;
    assert_eq!(missing, Err(json!({"status": 404, "message": "user not found"})));

    let malformed = call(&app, pattern, json!({"id": "nope"})).await.unwrap_err();
    assert_eq!(malformed["status"], 400, "{malformed}");
    assert!(malformed["message"].as_str().unwrap_or_default().starts_with("id must be a UUID: "), "{malformed}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nestjs_client_with_a_json_string_pattern_and_other_key_order_gets_the_same_replies() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.seed(&user).await;
    // The pattern as JSON text with its own spacing; an extra key ahead of `id` in the data.
    let pattern = json!("{ \"cmd\" : \"get_user\" }");

    let found = call(&app, pattern.clone(), json!({"extra": true, "id": user.id})).await;
    let expected = json!({"id": user.id, "email": user.email, "name": "Ada", "createdAt": "2024-05-01T12:00:00.123Z"});
    assert_eq!(found, Ok(expected));

    let missing = call(&app, pattern, json!({"extra": true, "id": Uuid::new_v4()})).await;
    assert_eq!(missing, Err(json!({"status": 404, "message": "user not found"})));
    app.finish().await;
}
