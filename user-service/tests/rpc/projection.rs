//! `user.created` → the projection: visible through `get_user`, idempotent, order-independent,
//! and poison events parked without stopping the service.

use lapin::BasicProperties;
use serde_json::json;
use shared::contracts::User;
use tests::{DEADLINE, eventually};
use uuid::Uuid;

use crate::support::{TestApp, at, created, new_user};

/// One handler at a time, in queue order: once a later event is visible, every earlier one
/// has been handled.
const IN_ORDER: &[(&str, &str)] = &[("PREFETCH", "1")];

/// Emits a sentinel event and waits until it is projected: with [`IN_ORDER`], everything
/// emitted before it has been handled by then.
async fn settle(app: &TestApp) {
    let sentinel = new_user("sentinel");
    app.emit(&created(&sentinel), &Uuid::new_v4().to_string()).await;
    wait_for(app, &sentinel).await;
}

/// Polls `get_user` until it answers exactly `expected`.
async fn wait_for(app: &TestApp, expected: &User) {
    eventually(DEADLINE, || async {
        match app.get_user(expected.id).await {
            Ok(user) if user == *expected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_event_makes_the_user_available() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");

    app.emit(&created(&user), &Uuid::new_v4().to_string()).await;

    wait_for(&app, &user).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_leaves_one_unchanged_row() {
    let app = TestApp::spawn_with(IN_ORDER).await;
    let user = new_user("Ada");
    let event_id = Uuid::new_v4().to_string();
    app.emit(&created(&user), &event_id).await;
    wait_for(&app, &user).await;
    let written_at = updated_at(&app, user.id).await;

    app.emit(&created(&user), &event_id).await;
    settle(&app).await;

    assert_eq!(app.rows_for(user.id).await, 1);
    assert_eq!(updated_at(&app, user.id).await, written_at, "a duplicate must not rewrite the row");
    assert_eq!(app.get_user(user.id).await.unwrap(), user);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_event_after_a_newer_one_keeps_the_newer_data() {
    let app = TestApp::spawn_with(IN_ORDER).await;
    let older = new_user("Ada");
    let newer = User { name: "Ada Lovelace".into(), created_at: at("2024-05-02T08:00:00.000Z"), ..older.clone() };

    app.emit(&created(&newer), &Uuid::new_v4().to_string()).await;
    wait_for(&app, &newer).await;
    app.emit(&created(&older), &Uuid::new_v4().to_string()).await;
    settle(&app).await;

    assert_eq!(app.get_user(newer.id).await.unwrap(), newer);
    assert_eq!(app.rows_for(newer.id).await, 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_event_replaces_an_older_one() {
    let app = TestApp::spawn_with(IN_ORDER).await;
    let older = new_user("Ada");
    let newer =
        User { email: "ada@lovelace.example".into(), created_at: at("2024-05-02T08:00:00.000Z"), ..older.clone() };

    app.emit(&created(&older), &Uuid::new_v4().to_string()).await;
    wait_for(&app, &older).await;
    app.emit(&created(&newer), &Uuid::new_v4().to_string()).await;

    wait_for(&app, &newer).await;
    assert_eq!(app.rows_for(newer.id).await, 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_one_created_at_converge_whatever_their_order() {
    let app = TestApp::spawn_with(IN_ORDER).await;
    // Two versions of one user with the same createdAt: the greater event id wins.
    let (small_id, big_id) = ("00000000-0000-4000-8000-000000000001", "ffffffff-ffff-4fff-bfff-ffffffffffff");
    let first = new_user("first");
    let second = new_user("second");
    for (user, order) in [(&first, [small_id, big_id]), (&second, [big_id, small_id])] {
        for event_id in order {
            let name = if event_id == big_id { "winner" } else { "loser" };
            app.emit(&created(&User { name: name.into(), ..user.clone() }), event_id).await;
        }
    }
    settle(&app).await;

    for user in [&first, &second] {
        assert_eq!(app.get_user(user.id).await.unwrap().name, "winner");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_parked_and_get_user_keeps_answering() {
    let app = TestApp::spawn().await;
    let user = new_user("Ada");
    app.seed(&user).await;

    let routed =
        app.probe.publish_raw(&app.exchange, "user.created", b"\x00 not json", BasicProperties::default()).await;
    assert!(routed, "the events queue is bound to user.created");

    let parked = app.probe.wait_for_message(&app.dlq(), DEADLINE).await;
    assert_eq!(parked.body, b"\x00 not json");
    assert_eq!(parked.header("x-failure"), Some(&json!("undecodable")));
    assert_eq!(parked.header("x-service"), Some(&json!("user-service")));
    assert_eq!(app.get_user(user.id).await.unwrap(), user);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_breaks_the_contract_is_parked_at_once() {
    let app = TestApp::spawn().await;
    let body = json!({"pattern": "user.created", "data": {"id": "nope", "email": "x@example.com"}});

    app.probe.publish_raw(&app.exchange, "user.created", body.to_string().as_bytes(), BasicProperties::default()).await;

    let parked = app.probe.wait_for_message(&app.dlq(), DEADLINE).await;
    assert_eq!(parked.json(), body);
    assert_eq!(parked.header("x-failure"), Some(&json!("permanent")));
    assert_eq!(parked.header("x-attempts"), Some(&json!(1)));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_postgres_rejects_is_parked_at_once_not_retried() {
    let app = TestApp::spawn().await;
    // Postgres text cannot hold a NUL character: this event can never be written.
    let user = User { name: "Ada\u{0}".into(), ..new_user("") };

    app.emit(&created(&user), &Uuid::new_v4().to_string()).await;

    let parked = app.probe.wait_for_message(&app.dlq(), DEADLINE).await;
    assert_eq!(parked.header("x-failure"), Some(&json!("permanent")));
    assert_eq!(parked.header("x-attempts"), Some(&json!(1)));
    let error = parked.header("x-error").and_then(|error| error.as_str()).unwrap_or_default().to_owned();
    assert!(error.starts_with("the database rejected the event's data"), "{error}");
    assert_eq!(app.rows_for(user.id).await, 0);
    app.finish().await;
}

async fn updated_at(app: &TestApp, id: Uuid) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar!("SELECT updated_at FROM users WHERE id = $1", id).fetch_one(&app.pool).await.unwrap()
}
