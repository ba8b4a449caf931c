//! Every handled message is counted by queue, pattern, kind and outcome
//! (`transport_messages_total`), and its handler timed (`transport_handler_duration_seconds`).

use serde_json::json;
use shared::SendOptions;

use crate::{Broken, DEADLINE, Echo, Fail, Fixture, Ping};

/// The value of `transport_messages_total` for this queue, kind and outcome (pattern aside).
fn count(rendered: &str, queue: &str, kind: &str, outcome: &str) -> u64 {
    let labels = [format!("queue=\"{queue}\""), format!("kind=\"{kind}\""), format!("outcome=\"{outcome}\"")];
    rendered
        .lines()
        .filter(|line| line.starts_with("transport_messages_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn every_message_is_counted_by_kind_and_outcome() {
    // The process-wide recorder, installed before anything is counted.
    let metrics = shared::ops::metrics();
    let fixture = Fixture::start().await;
    let client = &fixture.client;
    client.send(&Echo { text: "ok".into(), delay_ms: 0 }).await.unwrap();
    client.send(&Fail { status: Some(404) }).await.unwrap_err();
    client.send(&Fail { status: None }).await.unwrap_err();
    client.send_raw(&json!({"cmd": "nobody"}), &json!({}), SendOptions::default()).await.unwrap_err();
    client.emit(&Ping { n: 1 }).await.unwrap();
    client.emit(&Broken { permanent: true }).await.unwrap();
    client.emit(&Broken { permanent: false }).await.unwrap();
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    probe.publish_raw("", &fixture.queue, b"not json", lapin::BasicProperties::default()).await;

    let queue = fixture.queue.as_str();
    let expected = [
        ("request", "ok", 1),
        ("request", "rejected", 1),
        ("request", "error", 1),
        ("request", "no-handler", 1),
        ("event", "ok", 1),
        // The transient failure twice (fast_retry(3)), then both broken events parked.
        ("event", "retried", 2),
        ("event", "parked", 2),
        ("undecodable", "parked", 1),
    ];
    tests::eventually(DEADLINE, || async {
        let rendered = metrics.render();
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(kind, outcome, want)| {
                let got = count(&rendered, queue, kind, outcome);
                (got != *want).then(|| format!("{kind}/{outcome}: {got}, want {want}"))
            })
            .collect();
        if wrong.is_empty() { Ok(()) } else { Err(wrong) }
    })
    .await;
    let rendered = metrics.render();
    let timed = format!("transport_handler_duration_seconds_count{{queue=\"{queue}\"");
    assert!(rendered.lines().any(|line| line.starts_with(&timed)), "no handler duration for {queue}");
    // Unknown patterns share one label, so that junk cannot grow the metrics.
    let unknown = rendered
        .lines()
        .filter(|line| line.starts_with("transport_messages_total{") && line.contains(&format!("queue=\"{queue}\"")))
        .filter(|line| line.contains("outcome=\"no-handler\""))
        .all(|line| line.contains("pattern=\"unknown\""));
    assert!(unknown, "{rendered}");
}
