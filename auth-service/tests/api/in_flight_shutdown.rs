//! The built binary stopped (SIGTERM) while a signup is in flight (its transaction waits on a
//! lock the test holds): the port stops accepting, the signup is still answered 201, its
//! `user.created` is published before the process exits (the relay's last flush), and the
//! exit code is 0, within `SHUTDOWN_GRACE_MS`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{BrokerProbe, DEADLINE, ServiceEnv, eventually, process::log_tail};

use crate::test_app::PASSWORD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_signup_in_flight_publishes_its_event_then_exits_0() {
    let env = ServiceEnv::new().await;
    let crate::binary::Binary { process, http, log, dir: _dir } = crate::binary::start(
        &env,
        &[
            ("SHUTDOWN_GRACE_MS", "10000"),
            ("DATABASE_TIMEOUT_MS", "15000"),
            // No periodic poll during the test: the event leaves on the commit's notification or
            // the flush at shutdown.
            ("OUTBOX_POLL_MS", "600000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let tap = tests::unique("in_flight_tap");
    probe.declare_queue(&tap).await;
    probe.bind(&tap, env.events_exchange(), "#").await;

    // Hold the credentials table: the signup's transaction waits for it.
    let pool = env.db().pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let signup = tokio::spawn({
        let request = client
            .post(format!("http://{http}/auth/signup"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}));
        async move { request.send().await }
    });
    eventually(DEADLINE, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'auth-service' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await?;
        if waiting > 0 { Ok(()) } else { Err(sqlx::Error::RowNotFound) }
    })
    .await;

    process.signal("TERM").await.unwrap();
    // Stopped accepting: a new connection is refused while the signup still waits.
    eventually(DEADLINE, || async {
        match tokio::net::TcpStream::connect(&http).await {
            Err(_) => Ok(()),
            Ok(_) => Err("the HTTP port still accepts"),
        }
    })
    .await;
    assert!(!signup.is_finished(), "the signup was answered before the lock was released");
    lock.rollback().await.unwrap();

    let response = tokio::time::timeout(DEADLINE, signup).await.expect("an answer").unwrap();
    let response = response.unwrap_or_else(|error| panic!("{error}:\n{}", log_tail(&log)));
    assert_eq!(response.status(), StatusCode::CREATED, "{}", log_tail(&log));
    let user: Value = response.json().await.unwrap();
    let status = process.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| panic!("no exit within the grace period:\n{}", log_tail(&log)));
    assert!(status.success(), "{status}:\n{}", log_tail(&log));

    // Published before the exit: the process is gone, the event is in the tap queue.
    let event = probe.get(&tap).await.unwrap_or_else(|| panic!("no user.created published:\n{}", log_tail(&log)));
    assert_eq!(event.json()["data"]["id"], user["id"], "{:?}", event.json());
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(unpublished, 0, "the outbox row is marked published");
    pool.close().await;
    probe.delete_queues(&[&tap]).await;
    env.finish().await;
}
