//! `{cmd:"get_user"}` through the shared client.

use serde_json::json;
use shared::{Request, SendOptions, contracts::GetUser, topology};
use tests::DEADLINE;

use crate::support::{TestApp, new_user, remote_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_user_is_answered_with_its_profile() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.seed(&user).await;

    assert_eq!(app.get_user(user.id).await.unwrap(), user);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_is_the_nestjs_shaped_profile() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.seed(&user).await;

    let reply = app.client.send_raw(&GetUser::pattern(), &json!({"id": user.id}), SendOptions::default()).await;
    assert_eq!(
        reply.unwrap(),
        json!({"id": user.id, "email": user.email, "name": "Ada", "createdAt": "2024-05-01T12:00:00.123Z"})
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_is_answered_with_404() {
    let app = TestApp::spawn().await;

    let (status, message) = remote_error(app.get_user(uuid::Uuid::new_v4()).await);
    assert_eq!((status, message.as_str()), (Some(404), "user not found"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_is_not_a_uuid_is_answered_with_400_naming_the_problem() {
    let app = TestApp::spawn().await;

    for id in ["not-a-uuid", "", "4fb7e234-2daa-5fed-bdf6-93f8f482da8"] {
        let (status, message) = remote_error(app.get_user(id).await);
        assert_eq!(status, Some(400), "id {id:?}");
        assert!(message.starts_with("id must be a UUID: "), "id {id:?}: {message}");
        assert!(message.len() > "id must be a UUID: ".len(), "the message says what is wrong: {message}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_id_is_answered_with_400_and_parked() {
    let app = TestApp::spawn().await;

    for data in [json!({}), json!({"id": 42}), json!(null)] {
        let reply = app.client.send_raw(&GetUser::pattern(), &data, SendOptions::default()).await;
        let (status, _) = remote_error(reply);
        assert_eq!(status, Some(400), "data {data}");
    }
    // A request that breaks its contract is also parked, for the operator to see.
    let dlq = topology::dlq_name(&app.queue);
    for _ in 0..3 {
        let parked = app.probe.wait_for_message(&dlq, DEADLINE).await;
        assert_eq!(parked.header("x-failure"), Some(&json!("permanent")), "{parked:?}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    // Concurrent lookups share database queries (src/lookups.rs): each must still get its own.
    let app = TestApp::spawn().await;
    let users: Vec<_> = (0..50).map(|n| new_user(&format!("user {n}"))).collect();
    for user in &users {
        app.seed(user).await;
    }

    let shared = &app;
    let calls = users.iter().map(|user| async move {
        let unknown = uuid::Uuid::new_v4();
        let (found, missing) = tokio::join!(shared.get_user(user.id), shared.get_user(unknown));
        assert_eq!(found.unwrap(), *user);
        assert_eq!(remote_error(missing).0, Some(404));
    });
    futures::future::join_all(calls).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_bytes_is_the_largest_request_the_service_reads() {
    let app = TestApp::spawn_with(&[("MAX_MESSAGE_BYTES", "256")]).await;

    // Under the limit, a malformed id is read and refused by the handler (400); over it, the
    // request is refused unread (413) and parked.
    let (status, _) = remote_error(app.get_user("x".repeat(100)).await);
    assert_eq!(status, Some(400));
    let (status, message) = remote_error(app.get_user("x".repeat(400)).await);
    assert_eq!(status, Some(413), "{message}");
    assert!(message.starts_with("message too large"), "{message}");
    let parked = app.probe.wait_for_message(&topology::dlq_name(&app.queue), DEADLINE).await;
    assert_eq!(parked.header("x-failure"), Some(&json!("too-large")), "{parked:?}");
    app.finish().await;
}
