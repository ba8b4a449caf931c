//! The built binary stopped (SIGTERM) while it handles a request: it stops consuming first, the
//! request in flight is still answered, then it exits 0 within `SHUTDOWN_GRACE_MS`.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};
use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, SendOptions, contracts::GetUser};
use tests::{DEADLINE, ServiceEnv, eventually};

use crate::{binary, support::new_user};

/// The consumers on `queue` (a passive declare).
async fn consumers(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.unwrap();
    let declared =
        channel.queue_declare(queue.into(), QueueDeclareOptions::default().passive(), FieldTable::default()).await;
    let _closed = channel.close(200, "counted".into()).await;
    declared.unwrap().consumer_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_consuming_answers_the_request_in_flight_then_exits_0() {
    let env = ServiceEnv::new().await;
    // A patient database bound, so the request outlasts the signal; the grace period is the
    // default, stated.
    let binary = binary::start(&env, &[("DATABASE_TIMEOUT_MS", "15000"), ("SHUTDOWN_GRACE_MS", "10000")]).await;
    let pool = env.db().pool().await;
    let user = new_user("Ada");
    sqlx::query("INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(user.created_at)
        .execute(&pool)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let client = Client::start(
        ClientConfig::new(BrokerConfig::new(env.amqp_url().to_owned(), "user-binary-tests")).queue(env.user_queue()),
        shutdown.clone(),
    );
    assert!(client.wait_connected(DEADLINE).await, "the test client did not connect");

    // Hold the table so the service's SELECT waits, then send the request.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let id = user.id.to_string();
        let patient = SendOptions { timeout: Some(DEADLINE), ..SendOptions::default() };
        async move { client.send_with(&GetUser { id }, patient).await }
    });
    eventually(DEADLINE, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'user-service' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await?;
        if waiting > 0 { Ok(()) } else { Err(sqlx::Error::RowNotFound) }
    })
    .await;

    binary.process.signal("TERM").await.unwrap();
    // The shutdown is under way: the consumers are cancelled (a request sent now would wait in
    // the queue for the next instance), while the request in flight still waits on the lock.
    let broker = Connection::connect(env.amqp_url(), ConnectionProperties::default()).await.unwrap();
    let queue = env.user_queue().to_owned();
    eventually(DEADLINE, || async {
        match consumers(&broker, &queue).await {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert!(!in_flight.is_finished(), "answered before the lock was released");
    lock.rollback().await.unwrap();

    let answer = tokio::time::timeout(DEADLINE, in_flight).await.expect("an answer within the deadline").unwrap();
    assert_eq!(answer.unwrap_or_else(|error| panic!("{error}:\n{}", binary.process.log_tail())), user);
    let log = binary.process.log().to_owned();
    let status = binary.process.wait_exit(Duration::from_secs(10)).await;
    let status =
        status.unwrap_or_else(|| panic!("no exit within the grace period:\n{}", tests::process::log_tail(&log)));
    assert!(status.success(), "{status}:\n{}", tests::process::log_tail(&log));

    let _closed = broker.close(200, "done".into()).await;
    shutdown.cancel();
    client.closed().await;
    pool.close().await;
    env.finish().await;
}
