//! `mq topology check` against the real services: no drift while they run with the catalog's
//! topology (so the catalog says what they declare), then each kind of drift it can see over
//! AMQP; and the catalog restates the services' default configuration.

use std::time::Duration;

use serde_json::Value;
use shared::{
    CancellationToken,
    contracts::services::{DeclaredTopology, SERVICES},
    topology,
};
use tests::{BrokerProbe, DEADLINE, ServiceEnv};

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
