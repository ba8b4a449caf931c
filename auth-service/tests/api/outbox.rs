//! `user.created` through the transactional outbox: one NestJS-shaped, persistent,
//! confirmed event per signup, published even when the broker was down at signup time, and
//! never published twice by concurrent relays.

use std::{collections::HashSet, time::Duration};

use auth_service::{config::OutboxConfig, db, outbox, relay::Relay};
use reqwest::StatusCode;
use serde_json::Value;
use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, contracts::UserCreated};
use tests::{BrokerProbe, ChaosProxy, DEADLINE, ServiceEnv};
use uuid::Uuid;

use crate::test_app::TestApp;

/// What a subscriber of `user.created` sees: the env's `USER_EVENTS_QUEUE`, bound to its
/// events exchange (both deleted with the env, also when the test fails).
struct Subscription {
    probe: BrokerProbe,
    queue: String,
}

impl Subscription {
    async fn new(env: &ServiceEnv) -> Subscription {
        let probe = BrokerProbe::connect(env.amqp_url()).await;
        let (queue, exchange) = (env.user_events_queue(), env.events_exchange());
        probe.declare_topic_exchange(exchange).await;
        probe.declare_queue(queue).await;
        probe.bind(queue, exchange, "user.created").await;
        Subscription { probe, queue: queue.to_owned() }
    }
}

async fn subscribe(app: &TestApp) -> Subscription {
    Subscription::new(&app.env).await
}

async fn unpublished(app: &TestApp) -> i64 {
    outbox::pending(&mut app.pool.acquire().await.unwrap()).await.unwrap()
}

async fn wait_until_drained(app: &TestApp) {
    tests::eventually(DEADLINE, || async {
        let left = unpublished(app).await;
        if left == 0 { Ok(()) } else { Err(left) }
    })
    .await;
}

#[tokio::test]
async fn each_signup_publishes_one_user_created_event_in_the_nestjs_shape() {
    let app = TestApp::spawn().await;
    let Subscription { probe, queue } = &subscribe(&app).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";

    let response = app
        .http
        .post(app.url("/auth/signup"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"email": "ada@example.com", "password": crate::test_app::PASSWORD, "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.unwrap();

    let message = probe.wait_for_message(queue, DEADLINE).await;
    let expected = serde_json::json!({"pattern": "user.created", "data": user});
    assert_eq!(message.json(), expected, "the NestJS event packet, nothing more");
    let body = String::from_utf8(message.body.clone()).unwrap();
    assert!(
        body.starts_with(r#"{"pattern":"user.created","data":{"id":"#) && body.contains(r#""name":"Ada","createdAt":"#),
        "the payload goes out as written, fields in the contract's order: {body}"
    );
    assert_eq!(message.routing_key, "user.created");
    assert_eq!(message.exchange, app.events_exchange());
    assert_eq!(message.delivery_mode, Some(2), "persistent");
    let event_id = sqlx::query_scalar!("SELECT id FROM outbox").fetch_one(&app.pool).await.unwrap();
    assert_eq!(message.message_id, Some(event_id.to_string()), "message_id is the outbox row id");
    let traceparent = message.header("traceparent").and_then(Value::as_str).expect("a traceparent header");
    assert_eq!(shared::TraceContext::parse(traceparent).unwrap().trace_id(), trace_id, "the request's trace goes on");

    wait_until_drained(&app).await;
    probe.assert_empty(queue).await;
}

#[tokio::test]
async fn signup_works_while_the_broker_is_down_and_the_event_follows_its_return() {
    let broker_url = tests::amqp_url().await;
    let proxy = ChaosProxy::in_front_of(&broker_url).await;
    let proxied = proxy.url_for(&broker_url);
    let app = TestApp::spawn_with(|env| env.set("AMQP_URL", proxied)).await;
    let Subscription { probe, queue } = &subscribe(&app).await;
    app.wait_ready(StatusCode::OK).await;

    proxy.cut().await;
    app.wait_ready(StatusCode::SERVICE_UNAVAILABLE).await;
    let user = app.create_user("ada@example.com", "Ada").await;

    assert_eq!(unpublished(&app).await, 1, "the event waits in the outbox");
    probe.assert_empty(queue).await;

    proxy.restore();

    let message = probe.wait_for_message(queue, DEADLINE).await;
    assert_eq!(message.json()["data"], user);
    wait_until_drained(&app).await;
    probe.assert_empty(queue).await;
}

#[tokio::test]
async fn shutdown_flushes_what_the_last_requests_wrote() {
    let mut app = TestApp::spawn().await;
    let Subscription { probe, queue } = &subscribe(&app).await;
    app.wait_ready(StatusCode::OK).await;
    for i in 0..5 {
        app.create_user(&format!("user{i}@example.com"), "User").await;
    }

    app.stop().await;

    assert_eq!(unpublished(&app).await, 0, "run_until_stopped() returned with everything published");
    assert_eq!(probe.message_count(queue).await, 5);
}

/// An outbox with `rows` user.created events and a relay factory over it.
struct OutboxFixture {
    stop: CancellationToken,
    pool: sqlx::PgPool,
    /// The database and the events exchange; dropped last.
    env: ServiceEnv,
}

impl OutboxFixture {
    async fn with_rows(rows: usize) -> OutboxFixture {
        let env = ServiceEnv::new().await;
        let pool = env.db().pool().await;
        db::migrate(&pool, &shared::CancellationToken::new()).await.unwrap();
        let mut transaction = pool.begin().await.unwrap();
        for i in 0..rows {
            let event = UserCreated {
                id: Uuid::new_v4(),
                email: format!("user{i}@example.com"),
                name: format!("User {i}"),
                created_at: chrono::Utc::now(),
            };
            outbox::enqueue(&mut transaction, Uuid::new_v4(), &event, None).await.unwrap();
        }
        transaction.commit().await.unwrap();
        OutboxFixture { stop: CancellationToken::new(), pool, env }
    }

    /// A relay with a broker connection of its own (as another instance would have).
    async fn relay(&self, batch_size: u32) -> Relay {
        let broker = BrokerConfig::new(self.env.amqp_url(), "auth-test-relay");
        let config = ClientConfig::new(broker).events_exchange(self.env.events_exchange());
        let client = Client::start(config, self.stop.clone());
        assert!(client.wait_connected(DEADLINE).await);
        let pool = self.env.db().pool().await;
        Relay::new(
            pool,
            client,
            OutboxConfig { batch_size, poll_interval: Duration::from_secs(5), retention: Duration::from_secs(3600) },
        )
    }

    async fn subscribe(&self) -> Subscription {
        Subscription::new(&self.env).await
    }
}

impl Drop for OutboxFixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_over_one_outbox_never_publish_a_row_twice() {
    const ROWS: usize = 200;
    let fixture = OutboxFixture::with_rows(ROWS).await;
    let Subscription { probe, queue } = &fixture.subscribe().await;
    let (first, second) = (fixture.relay(5).await, fixture.relay(5).await);

    let (a, b) = tokio::join!(
        tokio::spawn(async move { first.drain().await }),
        tokio::spawn(async move { second.drain().await })
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());

    assert_eq!(a + b, ROWS, "together they published every row once (first {a}, second {b})");
    let unpublished = outbox::pending(&mut fixture.pool.acquire().await.unwrap()).await.unwrap();
    assert_eq!(unpublished, 0);
    let mut ids = HashSet::new();
    tests::eventually(DEADLINE, || async {
        let count = probe.message_count(queue).await as usize;
        if count == ROWS { Ok(()) } else { Err(count) }
    })
    .await;
    while let Some(message) = probe.get(queue).await {
        assert!(ids.insert(message.message_id.unwrap()), "a row was published twice");
    }
    assert_eq!(ids.len(), ROWS);
}

#[tokio::test]
async fn rows_another_relay_holds_are_skipped_not_published_again() {
    let fixture = OutboxFixture::with_rows(3).await;
    let Subscription { probe, queue } = &fixture.subscribe().await;
    let relay = fixture.relay(10).await;

    // Another instance is in the middle of publishing two of the rows.
    let mut other = fixture.pool.begin().await.unwrap();
    let held = outbox::claim(&mut other, 2).await.unwrap();
    assert_eq!(held.len(), 2);

    assert_eq!(relay.drain().await.unwrap(), 1, "only the free row");
    let message = probe.wait_for_message(queue, DEADLINE).await;
    assert!(held.iter().all(|row| Some(row.id.to_string()) != message.message_id));

    // The other instance fails and rolls back: its rows become available again.
    other.rollback().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 2);
    tests::eventually(DEADLINE, || async {
        let count = probe.message_count(queue).await;
        if count == 2 { Ok(()) } else { Err(count) }
    })
    .await;
}

#[tokio::test]
async fn the_relay_prunes_published_rows_after_the_retention_period() {
    let app = TestApp::spawn_with(|env| env.set("OUTBOX_RETENTION_SECS", "1").set("OUTBOX_POLL_MS", "200")).await;
    let _subscription = subscribe(&app).await;
    app.wait_ready(StatusCode::OK).await;
    app.create_user("ada@example.com", "Ada").await;
    wait_until_drained(&app).await;

    tests::eventually(DEADLINE, || async {
        let rows: i64 =
            sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#).fetch_one(&app.pool).await.unwrap();
        if rows == 0 { Ok(()) } else { Err(rows) }
    })
    .await;
}

#[tokio::test]
async fn pruning_goes_in_bounded_batches_and_never_takes_unpublished_or_recent_rows() {
    // 3 unpublished rows, 12 500 published 8 days ago, 1 published a minute ago.
    let fixture = OutboxFixture::with_rows(3).await;
    sqlx::query(
        "INSERT INTO outbox (id, pattern, payload, published_at) \
         SELECT gen_random_uuid(), 'user.created', '{}'::json, now() - interval '8 days' FROM generate_series(1, 12500)",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO outbox (id, pattern, payload, published_at) VALUES ($1, 'user.created', '{}'::json, now() - interval '1 minute')")
        .bind(Uuid::new_v4())
        .execute(&fixture.pool)
        .await
        .unwrap();
    let relay = fixture.relay(10).await; // retention: one hour

    let first = relay.prune().await.unwrap();
    let batch = u64::from(auth_service::relay::PRUNE_BATCH);
    assert_eq!(first, batch * u64::from(auth_service::relay::PRUNE_BATCHES), "one call deletes at most its batches");
    assert_eq!(relay.prune().await.unwrap(), 12_500 - first, "the next call takes the rest");
    assert_eq!(relay.prune().await.unwrap(), 0);

    let (unpublished, recent): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE published_at IS NOT NULL) FROM outbox",
    )
    .fetch_one(&fixture.pool)
    .await
    .unwrap();
    assert_eq!((unpublished, recent), (3, 1));
}
