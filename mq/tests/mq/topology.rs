//! `mq topology check` against the real services: no drift while they run with the catalog's
//! topology (so the catalog says what they declare), then each kind of drift it can see over
//! AMQP; the bindings through the management API of a private node with the plugin enabled
//! (`tests::local_rabbit`: the shared test broker runs without it), and what a wrong management
//! URL or password gives; and the catalog restates the services' default configuration.

use std::time::Duration;

use lapin::types::FieldTable;
use serde_json::Value;
use shared::{
    CancellationToken,
    contracts::services::{DeclaredTopology, SERVICES},
    topology,
};
use tests::{BrokerProbe, DEADLINE, ServiceEnv, local_rabbit::LocalRabbit, process::free_port};

use crate::support::mq;

fn kinds(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|finding| {
            (
                finding["kind"].as_str().unwrap_or_default().to_owned(),
                finding["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn the_check_finds_no_drift_while_the_services_run_then_each_drift() {
    let env = ServiceEnv::new().await;
    let notifications = env.sibling().await;
    let shutdown = CancellationToken::new();
    let users =
        user_service::App::build(user_service::Config::from_lookup(|name| env.lookup(name)).unwrap(), shutdown.clone())
            .await
            .expect("user-service starts");
    let stop_mail = CancellationToken::new();
    let config = notification_service::Config::from_lookup(|name| notifications.lookup(name)).unwrap();
    let mail = notification_service::App::build(config, stop_mail.clone()).await.expect("notification-service starts");
    assert!(users.wait_ready(DEADLINE).await && mail.wait_ready(DEADLINE).await);

    let clean = mq(&env, &["--json", "topology", "check"]).await;
    let report = clean.json();
    assert_eq!(clean.code, Some(0), "{report:#}");
    assert_eq!(kinds(&report), Vec::<(String, String)>::new(), "{report:#}");
    assert_eq!(report["queues"].as_array().map(Vec::len), Some(3 * (2 + env.retry_delays().len())), "{report:#}");
    assert_eq!(report["bindings"]["checked"], false);

    // Drift: the mail service stopped (no consumer), its dead-letter queue declared again
    // without its bounds (other arguments), a delay queue deleted (missing).
    stop_mail.cancel();
    mail.run_until_stopped().await;
    let queue = env.notification_queue().to_owned();
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let dlq = topology::dlq_name(&queue);
    probe.delete_queues(&[&dlq]).await;
    probe.declare_queue(&dlq).await;
    let delay = topology::retry_queue_name(&queue, env.retry_delays()[0]);
    probe.delete_queues(&[&delay]).await;

    let drift = mq(&env, &["--json", "topology", "check"]).await;
    let report = drift.json();
    assert_eq!(drift.code, Some(1), "{report:#}");
    let expected = vec![
        ("missing-queue".to_owned(), delay.clone()),
        ("no-consumer".to_owned(), queue.clone()),
        ("queue-arguments".to_owned(), dlq.clone()),
    ];
    assert_eq!(kinds(&report), expected, "{report:#}");
    let text = mq(&env, &["topology", "check"]).await;
    assert!(text.stderr.contains("DRIFT no-consumer") && text.stderr.contains("3 findings"), "{text:?}");

    shutdown.cancel();
    users.run_until_stopped().await;
    env.finish().await;
    drop(notifications);
}

/// user-service and notification-service running on `env` (its `AMQP_URL` set to the node):
/// they declare their queues, exchange and bindings themselves.
struct Running {
    shutdown: CancellationToken,
    users: user_service::App,
    mail: notification_service::App,
}

impl Running {
    async fn start(env: &ServiceEnv, notifications: &ServiceEnv) -> Running {
        let shutdown = CancellationToken::new();
        let config = user_service::Config::from_lookup(|name| env.lookup(name)).unwrap();
        let users = user_service::App::build(config, shutdown.clone()).await.expect("user-service starts");
        let config = notification_service::Config::from_lookup(|name| notifications.lookup(name)).unwrap();
        let mail =
            notification_service::App::build(config, shutdown.clone()).await.expect("notification-service starts");
        assert!(users.wait_ready(DEADLINE).await && mail.wait_ready(DEADLINE).await);
        Running { shutdown, users, mail }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.users.run_until_stopped().await;
        self.mail.run_until_stopped().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_shows_the_bindings_match_then_the_one_removed() {
    let node = LocalRabbit::start_with_management().await;
    let management = node.management_url().expect("started with the management plugin");
    // The services on the private node; only its database is the shared Postgres's.
    let env = ServiceEnv::new().await.set("AMQP_URL", node.url());
    let notifications = env.sibling().await;
    let running = Running::start(&env, &notifications).await;
    let check = ["--json", "topology", "check", "--management-url", management.as_str()];

    let clean = mq(&env, &check).await;
    let report = clean.json();
    assert_eq!(clean.code, Some(0), "{report:#}");
    assert_eq!(kinds(&report), Vec::<(String, String)>::new(), "{report:#}");
    assert_eq!(report["bindings"]["checked"], true, "{report:#}");
    assert_eq!(report["bindings"]["expected"], 2, "{report:#}");

    // Drift: user-service's events queue no longer bound to the events exchange (as after an
    // operator's slip in the UI): its projection would silently receive nothing.
    let (queue, exchange) = (env.user_events_queue().to_owned(), env.events_exchange().to_owned());
    let connection = lapin::Connection::connect(&node.url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_unbind(queue.as_str().into(), exchange.as_str().into(), "user.created".into(), FieldTable::default())
        .await
        .unwrap();

    let drift = mq(&env, &check).await;
    let report = drift.json();
    assert_eq!(drift.code, Some(1), "{report:#}");
    assert_eq!(kinds(&report), vec![("missing-binding".to_owned(), queue.clone())], "{report:#}");
    let detail = report["findings"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&exchange) && detail.contains("user.created"), "{detail}");
    let text = mq(&env, &check[1..]).await;
    assert_eq!(text.code, Some(1), "{text:?}");
    let line = text.stderr.lines().find(|line| line.starts_with("DRIFT missing-binding"));
    assert!(line.is_some_and(|line| line.contains(&queue) && line.contains(&exchange)), "{text:?}");
    assert!(text.stderr.contains("1 findings"), "{text:?}");

    // Bound again as user-service declares it: no drift.
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "user.created".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let again = mq(&env, &check).await;
    assert_eq!((again.code, kinds(&again.json())), (Some(0), Vec::new()), "{again:?}");

    let _ = connection.close(200, "done".into()).await;
    running.stop().await;
    drop((notifications, env, node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_management_url_or_password_is_a_typed_error_naming_the_cause() {
    let node = LocalRabbit::start_with_management().await;
    let management = node.management_url().expect("started with the management plugin");
    let env = ServiceEnv::new().await.set("AMQP_URL", node.url());
    // The exchange exists, so a 404 from the API cannot mean it is missing.
    BrokerProbe::connect(&node.url()).await.declare_topic_exchange(env.events_exchange()).await;
    let port = management.rsplit(':').next().unwrap().to_owned();
    let nothing_there = format!("http://guest:guest@127.0.0.1:{}", free_port());
    let cases = [
        (format!("http://guest:not-the-password@127.0.0.1:{port}"), "the credentials were refused (HTTP 401"),
        (nothing_there, "Connection refused"),
        (format!("{management}/not-the-api/"), "is the URL the management API's root of this broker"),
        ("amqp://guest:guest@127.0.0.1:5672".to_owned(), "not an http(s) URL"),
        ("not a url".to_owned(), "not a URL"),
    ];
    for (url, cause) in cases {
        let run = mq(&env, &["--json", "topology", "check", "--management-url", &url]).await;
        assert_eq!(run.code, Some(1), "{url}: {run:?}");
        let report = run.json();
        assert_eq!(report["ok"], false, "{url}: {report:#}");
        assert_eq!(report["error"]["kind"], "management", "{url}: {report:#}");
        let message = report["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(cause), "{url}: {message:?} does not say {cause:?}");
        assert!(!message.contains("not-the-password"), "the password is shown: {message}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        let text = mq(&env, &["topology", "check", "--management-url", &url]).await;
        assert_eq!(text.code, Some(1), "{url}: {text:?}");
        assert!(text.stderr.starts_with("error: the management API at "), "{url}: {text:?}");
    }
    drop((env, node));
}

#[test]
fn the_catalog_restates_the_services_default_configuration() {
    let user = user_service::Config::from_lookup(|_| None).unwrap();
    let mail = notification_service::Config::from_lookup(|_| None).unwrap();
    let service = |name: &str| SERVICES.iter().find(|service| service.name == name).unwrap();
    assert_eq!(service("user-service").retry, user.retry.policy());
    assert_eq!(service("notification-service").retry, mail.retry.policy());
    let topology = DeclaredTopology::defaults();
    assert_eq!(topology.exchange, user.broker.events_exchange);
    for name in [&user.user_queue, &user.user_events_queue, &mail.notification_queue] {
        assert!(topology.queue(name).is_some_and(|queue| queue.consumed), "{name} is not in the catalog");
    }
    let delays: Vec<Duration> = mail.retry.policy().delays();
    for delay in delays {
        assert!(topology.queue(&topology::retry_queue_name(&mail.notification_queue, delay)).is_some());
    }
}
