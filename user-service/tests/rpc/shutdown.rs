//! Graceful shutdown: consumers stop, the request in flight is still answered.

use std::time::Duration;

use shared::{RpcError, SendOptions, contracts::GetUser};
use tests::{DEADLINE, eventually};

use crate::support::{TestApp, new_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_shutdown_is_answered_and_later_ones_wait_in_the_queue() {
    // A patient database bound, so the request outlasts the shutdown signal.
    let mut app = TestApp::spawn_with(&[("DATABASE_TIMEOUT_MS", "10000")]).await;
    let user = new_user("Ada");
    app.seed(&user).await;

    // Hold the table so the service's SELECT waits, then send the request.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query!("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let id = user.id.to_string();
        async move { client.send(&GetUser { id }).await }
    });
    eventually(DEADLINE, || async {
        let waiting = sqlx::query_scalar!(
            r#"SELECT count(*) AS "waiting!" FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'user-service' AND wait_event_type = 'Lock'"#,
        )
        .fetch_one(&app.pool)
        .await?;
        if waiting > 0 { Ok(()) } else { Err(sqlx::Error::RowNotFound) }
    })
    .await;

    app.shutdown.cancel();
    lock.rollback().await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), user);
    app.stop().await;

    let late = SendOptions { timeout: Some(Duration::from_millis(500)), ..SendOptions::default() };
    let answer = app.client.send_with(&GetUser { id: user.id.to_string() }, late).await;
    assert!(matches!(answer, Err(RpcError::Timeout { .. })), "{answer:?}");
    assert_eq!(app.probe.message_count(&app.queue).await, 1, "the late request waits for the next instance");
    app.finish().await;
}
