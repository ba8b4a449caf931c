//! Proves the test kit against the real RabbitMQ and Postgres: databases, the broker probe,
//! the chaos proxy, polling, names and the service harness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use lapin::{BasicProperties, Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};
use serde_json::json;
use sqlx::{Connection as _, PgConnection, Row};
use tests::{
    BrokerProbe, ChaosProxy, ServiceEnv, TestDb, amqp_url, broker::fields::json_to_table, eventually, eventually_some,
    logs, postgres_url, unique, urls,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// Whether a database of that name exists on the shared server.
async fn database_exists(name: &str) -> Result<bool, sqlx::Error> {
    let mut connection = PgConnection::connect(&urls::with_path(&postgres_url().await, "postgres")).await?;
    let row = sqlx::query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    Ok(row.get::<i64, _>("n") == 1)
}

#[tokio::test]
async fn test_db_is_usable_and_gone_after_drop() {
    logs::init();
    let db = TestDb::create().await;
    assert!(db.name.starts_with("test_"), "{}", db.name);
    assert!(db.url.ends_with(&db.name), "{}", db.url);
    assert!(database_exists(&db.name).await.unwrap());

    let pool = db.pool().await;
    sqlx::raw_sql("CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO items (label) VALUES ($1), ($2)").bind("a").bind("b").execute(&pool).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 2);

    // The pool is still open: the drop must force its sessions out.
    let name = db.name.clone();
    drop(db);
    eventually(DEADLINE, || async {
        match database_exists(&name).await {
            Ok(false) => Ok(()),
            Ok(true) => Err("database still exists".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    assert!(pool.acquire().await.is_err(), "the dropped database must not accept connections");
}

#[tokio::test]
async fn two_test_dbs_are_separate() {
    let first = TestDb::create().await;
    let second = TestDb::create().await;
    assert_ne!(first.name, second.name);
    assert_ne!(first.url, second.url);

    let first_pool = first.pool().await;
    sqlx::raw_sql("CREATE TABLE only_in_first (id int)").execute(&first_pool).await.unwrap();
    let second_pool = second.pool().await;
    let seen: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('only_in_first')::text").fetch_one(&second_pool).await.unwrap();
    assert_eq!(seen, None, "a table of one TestDb leaked into another");
}

#[tokio::test]
async fn postgres_url_names_no_database() {
    let url = postgres_url().await;
    assert!(url.starts_with("postgres://") || url.starts_with("postgresql://"), "{url}");
    assert_eq!(urls::with_path(&url, ""), url, "{url} must not name a database");
}

#[tokio::test]
async fn probe_round_trips_a_message_with_headers_and_properties() {
    logs::init();
    let probe = BrokerProbe::new().await;
    let exchange = unique("kit_x");
    let queue = unique("kit_q");
    probe.declare_topic_exchange(&exchange).await;
    probe.declare_queue(&queue).await;
    probe.bind(&queue, &exchange, "kit.*").await;
    assert!(probe.queue_exists(&queue).await);
    assert!(!probe.queue_exists(&unique("kit_missing")).await);
    probe.assert_empty(&queue).await;

    let properties = BasicProperties::default()
        .with_headers(json_to_table(&json!({"x-attempt": 2, "tenant": "acme", "tags": ["a", "b"]})))
        .with_message_id("m-1".into())
        .with_correlation_id("c-1".into())
        .with_reply_to("replies".into())
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let body = serde_json::to_vec(&json!({"hello": "world"})).unwrap();
    assert!(probe.publish_raw(&exchange, "kit.created", &body, properties).await);
    assert!(!probe.publish_raw(&exchange, "elsewhere", b"{}", BasicProperties::default()).await);

    let message = probe.wait_for_message(&queue, DEADLINE).await;
    assert_eq!(message.json(), json!({"hello": "world"}));
    assert_eq!(message.body, body);
    assert_eq!(message.header("x-attempt"), Some(&json!(2)));
    assert_eq!(message.header("tenant"), Some(&json!("acme")));
    assert_eq!(message.header("tags"), Some(&json!(["a", "b"])));
    assert_eq!(message.routing_key, "kit.created");
    assert_eq!(message.exchange, exchange);
    assert_eq!(message.message_id.as_deref(), Some("m-1"));
    assert_eq!(message.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(message.reply_to.as_deref(), Some("replies"));
    assert_eq!(message.delivery_mode, Some(2));
    assert_eq!(message.content_type.as_deref(), Some("application/json"));
    assert!(!message.redelivered);
    probe.assert_empty(&queue).await;
    assert_eq!(probe.get(&queue).await, None);

    probe.delete_queues(&[&queue]).await;
    probe.delete_exchange(&exchange).await;
    assert!(!probe.queue_exists(&queue).await);
}

#[tokio::test]
async fn probe_counts_messages_and_survives_a_failed_check() {
    let probe = BrokerProbe::new().await;
    let queue = unique("kit_count");
    probe.declare_queue(&queue).await;
    for n in 0..3 {
        assert!(probe.publish_raw("", &queue, format!("{n}").as_bytes(), BasicProperties::default()).await);
    }
    eventually(DEADLINE, || async {
        let count = probe.message_count(&queue).await;
        if count == 3 { Ok(()) } else { Err(count) }
    })
    .await;
    // A check on a missing queue gets a channel closed by RabbitMQ; the probe must go on.
    assert!(!probe.queue_exists(&unique("kit_missing")).await);
    let first = probe.get(&queue).await.expect("a message");
    assert_eq!(first.body, b"0");
    assert_eq!(probe.message_count(&queue).await, 2);
    probe.delete_queues(&[&queue]).await;
}

#[tokio::test]
async fn chaos_proxy_cuts_and_restores_an_amqp_link() {
    let real_url = amqp_url().await;
    let proxy = ChaosProxy::in_front_of(&real_url).await;
    let proxied_url = proxy.url_for(&real_url);
    assert!(proxied_url.contains(&proxy.addr().to_string()), "{proxied_url}");

    let connection = Connection::connect(&proxied_url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = unique("kit_chaos");
    let options = QueueDeclareOptions::exclusive(); // gone with its connection
    channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
    assert_eq!(proxy.live_connections(), 1);

    proxy.cut().await;
    assert!(proxy.is_cut());
    assert_eq!(proxy.live_connections(), 0);
    // Poll the status, not a request: with lapin 4.12 a request issued while the io loop is
    // noticing the closed socket can stay unanswered forever.
    eventually(DEADLINE, || async {
        if connection.status().errored() { Ok(()) } else { Err("the connection through the cut proxy has not failed") }
    })
    .await;
    assert!(connection.create_channel().await.is_err());
    let refused = Connection::connect(&proxied_url, ConnectionProperties::default()).await;
    assert!(refused.is_err(), "a new connection must fail while the proxy is cut");

    proxy.restore();
    assert!(!proxy.is_cut());
    let again = Connection::connect(&proxied_url, ConnectionProperties::default()).await.unwrap();
    let channel = again.create_channel().await.unwrap();
    channel.queue_declare(unique("kit_chaos").as_str().into(), options, FieldTable::default()).await.unwrap();
    assert_eq!(proxy.live_connections(), 1);
    again.close(200, "done".into()).await.unwrap();
    eventually(DEADLINE, || async {
        match proxy.live_connections() {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
}

#[tokio::test]
async fn chaos_proxy_cuts_and_restores_a_postgres_link() {
    let db = TestDb::create().await;
    let proxy = ChaosProxy::in_front_of(&db.url).await;
    let proxied_url = proxy.url_for(&db.url);
    let mut connection = PgConnection::connect(&proxied_url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await.unwrap();
    assert_eq!(one, 1);

    proxy.cut().await;
    assert!(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut connection).await.is_err());
    assert!(PgConnection::connect(&proxied_url).await.is_err());

    proxy.restore();
    let mut again = PgConnection::connect(&proxied_url).await.unwrap();
    let two: i32 = sqlx::query_scalar("SELECT 2").fetch_one(&mut again).await.unwrap();
    assert_eq!(two, 2);
    again.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_chaos_proxy_closes_its_connections() {
    let real_url = amqp_url().await;
    let proxy = ChaosProxy::in_front_of(&real_url).await;
    let connection = Connection::connect(&proxy.url_for(&real_url), ConnectionProperties::default()).await.unwrap();
    drop(proxy);
    eventually(DEADLINE, || async {
        if connection.status().errored() { Ok(()) } else { Err("the connection outlived its proxy") }
    })
    .await;
}

#[tokio::test]
async fn eventually_returns_once_the_probe_succeeds() {
    let attempts = AtomicU32::new(0);
    let value = eventually(DEADLINE, || async {
        let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= 3 { Ok(n) } else { Err(format!("attempt {n}")) }
    })
    .await;
    assert_eq!(value, 3);
    let found = eventually_some(DEADLINE, || async { Some("here") }).await;
    assert_eq!(found, "here");
}

#[tokio::test]
#[should_panic(expected = "eventually: not satisfied within 200ms")]
async fn eventually_panics_with_the_last_error_at_the_deadline() {
    eventually(Duration::from_millis(200), || async { Err::<(), _>("never ready") }).await;
}

#[tokio::test]
#[should_panic(expected = "last error: \"still None\"")]
async fn eventually_some_panics_at_the_deadline() {
    eventually_some(Duration::from_millis(100), || async { None::<()> }).await;
}

#[tokio::test]
#[should_panic(expected = "did not finish")]
async fn eventually_cuts_off_a_hanging_probe() {
    eventually(Duration::from_millis(100), || async { std::future::pending::<Result<(), String>>().await }).await;
}

#[test]
fn unique_names_are_prefixed_hex_and_differ() {
    let a = unique("orders");
    let b = unique("orders");
    assert_ne!(a, b);
    let suffix = a.strip_prefix("orders_").expect("prefix kept");
    assert_eq!(suffix.len(), 12);
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
}

#[tokio::test]
async fn the_harness_hands_out_unique_names_a_fresh_database_and_fast_retries() {
    let env = ServiceEnv::new().await.set("PREFETCH", "4");
    let other = ServiceEnv::new().await;
    for var in ["USER_QUEUE", "USER_EVENTS_QUEUE", "NOTIFICATION_QUEUE", "EVENTS_EXCHANGE", "DATABASE_URL"] {
        assert_ne!(env.lookup(var), other.lookup(var), "{var} is shared");
    }
    assert_eq!(env.lookup("USER_QUEUE").as_deref(), Some(env.user_queue()));
    assert_eq!(env.lookup("EVENTS_EXCHANGE").as_deref(), Some(env.events_exchange()));
    assert_eq!(env.lookup("DATABASE_URL"), Some(env.db().url.clone()));
    assert_eq!(env.lookup("AMQP_URL"), Some(amqp_url().await));
    assert_eq!(env.lookup("OPS_ADDR").as_deref(), Some("127.0.0.1:0"));
    assert_eq!(env.lookup("HTTP_ADDR").as_deref(), Some("127.0.0.1:0"));
    assert_eq!(env.lookup("PREFETCH").as_deref(), Some("4"));
    assert_eq!(env.lookup("NOT_SET"), None);
    assert_eq!(env.vars().len(), 13);
    assert!(database_exists(&env.db().name).await.unwrap());

    let sibling = env.sibling().await;
    assert_eq!(sibling.user_queue(), env.user_queue());
    assert_eq!(sibling.lookup("PREFETCH").as_deref(), Some("4"));
    assert_ne!(sibling.lookup("DATABASE_URL"), env.lookup("DATABASE_URL"));
}

/// The retry policy the env's `RETRY_*` variables describe, as the services build it.
fn policy_of(env: &ServiceEnv) -> shared::RetryPolicy {
    let number = |var: &str| env.lookup(var).unwrap().parse::<u32>().unwrap();
    shared::RetryPolicy {
        max_attempts: number("RETRY_MAX_ATTEMPTS"),
        initial_delay: Duration::from_millis(number("RETRY_INITIAL_DELAY_MS").into()),
        multiplier: number("RETRY_MULTIPLIER"),
        max_delay: Duration::from_millis(number("RETRY_MAX_DELAY_MS").into()),
    }
}

#[tokio::test]
async fn the_harness_names_dead_letter_and_delay_queues_as_the_transport_does() {
    let env = ServiceEnv::new().await;
    let fast = policy_of(&env);
    assert_eq!((fast.max_attempts, fast.initial_delay, fast.max_delay), (3, ms(50), ms(200)));
    assert_eq!(env.retry_delays(), fast.delays());
    let env = env
        .set("RETRY_MAX_ATTEMPTS", "7")
        .set("RETRY_INITIAL_DELAY_MS", "100")
        .set("RETRY_MULTIPLIER", "3")
        .set("RETRY_MAX_DELAY_MS", "1000");
    assert_eq!(env.retry_delays(), policy_of(&env).delays());
    assert_eq!(env.retry_delays(), [ms(100), ms(300), ms(900), ms(1000)]);

    let queue = env.notification_queue();
    assert_eq!(tests::names::dlq(queue), shared::topology::dlq_name(queue));
    assert_eq!(tests::names::retry_queue(queue, ms(900)), shared::topology::retry_queue_name(queue, ms(900)));
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Declares every broker object a service of `env` could have: its queues, their dead-letter
/// and delay queues, and the exchange.
async fn declare_all(probe: &BrokerProbe, env: &ServiceEnv) -> Vec<String> {
    let mut queues = Vec::new();
    for queue in [env.user_queue(), env.user_events_queue(), env.notification_queue()] {
        queues.push(queue.to_owned());
        queues.push(tests::names::dlq(queue));
        queues.extend(env.retry_delays().into_iter().map(|delay| tests::names::retry_queue(queue, delay)));
    }
    for queue in &queues {
        probe.declare_queue(queue).await;
    }
    probe.declare_topic_exchange(env.events_exchange()).await;
    queues
}

#[tokio::test]
async fn finishing_the_harness_deletes_queues_exchange_and_database() {
    let probe = BrokerProbe::new().await;
    let env = ServiceEnv::new().await.set("RETRY_MAX_ATTEMPTS", "4");
    let sibling = env.sibling().await;
    let queues = declare_all(&probe, &env).await;
    assert_eq!(queues.len(), 3 * 5, "three queues, each with a DLQ and three delay queues");
    let (exchange, databases) = (env.events_exchange().to_owned(), [env.db().name.clone(), sibling.db().name.clone()]);

    env.finish().await;
    for queue in &queues {
        assert!(!probe.queue_exists(queue).await, "{queue} is left");
    }
    let channel = amqp_channel().await;
    let passive = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
    let declared =
        channel.exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Topic, passive, FieldTable::default());
    assert!(declared.await.is_err(), "exchange {exchange} is left");
    assert!(!database_exists(&databases[0]).await.unwrap());
    drop(sibling);
    assert!(!database_exists(&databases[1]).await.unwrap());
}

#[tokio::test]
async fn finishing_with_a_parked_message_fails_and_dropping_still_cleans_up() {
    let probe = BrokerProbe::new().await;
    let env = ServiceEnv::new().await;
    let queues = declare_all(&probe, &env).await;
    let dlq = tests::names::dlq(env.user_events_queue());
    assert!(probe.publish_raw("", &dlq, b"parked", BasicProperties::default()).await);

    let finished = tokio::spawn(env.finish()).await;
    let panic = finished.unwrap_err().into_panic();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.starts_with(&format!("{dlq} holds 1 parked message(s)")), "{message}");
    for queue in &queues {
        assert!(!probe.queue_exists(queue).await, "{queue} is left after the env was dropped");
    }
}

/// A channel of its own on the shared broker.
async fn amqp_channel() -> lapin::Channel {
    let connection = Connection::connect(&amqp_url().await, ConnectionProperties::default()).await.unwrap();
    connection.create_channel().await.unwrap()
}
