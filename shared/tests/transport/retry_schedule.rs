//! The backoff schedule: a failing event waits in `<queue>.retry.<ms>ms` for the delay the
//! policy gives each attempt, the main queue keeps serving meanwhile, and the parked message
//! says when it was parked.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Event, EventFailure, Listener, MessageContext, RetryPolicy,
    Server, ServerConfig, ServerHandle, State, retry, topology,
};

use crate::{DEADLINE, ToldToFail};

/// `test.flaky`: fails (transiently) when told to, else succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    n: u32,
    fail: bool,
}

impl Event for Flaky {
    const PATTERN: &'static str = "test.flaky";
}

/// One handler call: which event, which attempt, when, and the headers it carried.
#[derive(Debug, Clone)]
struct Call {
    n: u32,
    attempt: u32,
    at: Instant,
    headers: std::collections::BTreeMap<String, Value>,
    /// `ctx.header("x-attempt")`, as a handler reads one header.
    attempt_header: Option<Value>,
}

#[derive(Default)]
struct Calls(Mutex<Vec<Call>>);

impl Calls {
    fn of(&self, n: u32) -> Vec<Call> {
        self.0.lock().unwrap().iter().filter(|call| call.n == n).cloned().collect()
    }
}

async fn flaky(State(calls): State<Arc<Calls>>, ctx: MessageContext, event: Flaky) -> Result<(), EventFailure> {
    let attempt_header = ctx.header(retry::ATTEMPT_HEADER);
    let call = Call { n: event.n, attempt: ctx.attempt, at: Instant::now(), headers: ctx.headers(), attempt_header };
    calls.0.lock().unwrap().push(call);
    if event.fail { Err(EventFailure::transient(ToldToFail)) } else { Ok(()) }
}

struct Setup {
    amqp_url: String,
    queue: String,
    calls: Arc<Calls>,
    server: ServerHandle,
    client: Client,
    shutdown: CancellationToken,
    policy: RetryPolicy,
}

async fn start(policy: RetryPolicy, prefetch: u16) -> Setup {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("retry");
    let calls = Arc::new(Calls::default());
    let mut config = ServerConfig::new(BrokerConfig::new(&amqp_url, "retry-test"), "retry-test");
    config.retry = policy.clone();
    config.prefetch = prefetch;
    let shutdown = CancellationToken::new();
    let server =
        Server::new(Arc::clone(&calls)).event(flaky).listen(Listener::queue(&queue)).start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    let client =
        Client::start(ClientConfig::new(BrokerConfig::new(&amqp_url, "retry-client")).queue(&queue), shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    Setup { amqp_url, queue, calls, server, client, shutdown, policy }
}

impl Setup {
    async fn finish(self, probe: &tests::BrokerProbe) {
        self.shutdown.cancel();
        self.server.stopped().await;
        crate::delete_queue_and_failure_queues(probe, &self.queue, &self.policy).await;
    }
}

/// The queue a dead-lettered message last expired from, from RabbitMQ's `x-death` header
/// (most recent first).
fn last_expired_from(headers: &std::collections::BTreeMap<String, Value>) -> Option<String> {
    let death = headers.get("x-death")?.as_array()?.first()?;
    assert_eq!(death["reason"], json!("expired"), "{death}");
    death["queue"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn retries_wait_in_delay_queues_named_and_timed_by_the_retry_policy() {
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_delay: Duration::from_millis(300),
        multiplier: 2,
        max_delay: Duration::from_millis(800),
    };
    let setup = start(policy.clone(), 8).await;
    let probe = tests::BrokerProbe::connect(&setup.amqp_url).await;
    // One delay queue per distinct delay: 300 ms, 600 ms, then capped at 800 ms (not 1200).
    for delay in [300, 600, 800] {
        let name = format!("{}.retry.{delay}ms", setup.queue);
        assert!(probe.queue_exists(&name).await, "{name} was not declared");
    }
    assert!(!probe.queue_exists(&format!("{}.retry.1200ms", setup.queue)).await, "the cap was not applied");

    let emitted_at = chrono::Utc::now();
    setup.client.emit(&Flaky { n: 1, fail: true }).await.unwrap();
    let parked = probe.wait_for_message(&topology::dlq_name(&setup.queue), DEADLINE).await;
    let calls = setup.calls.of(1);
    assert_eq!(calls.iter().map(|call| call.attempt).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(last_expired_from(&calls[0].headers), None, "the first delivery comes straight from the queue");
    for pair in calls.windows(2) {
        let (failed, next) = (&pair[0], &pair[1]);
        let delay = policy.delay_after(failed.attempt);
        let waited = next.at - failed.at;
        assert!(waited >= delay, "attempt {} came {waited:?} after the failure, before its {delay:?}", next.attempt);
        assert!(
            waited < delay + Duration::from_secs(3),
            "attempt {} came {waited:?} after the failure (delay {delay:?})",
            next.attempt
        );
        let expected = topology::retry_queue_name(&setup.queue, delay);
        assert_eq!(last_expired_from(&next.headers), Some(expected), "attempt {}", next.attempt);
        assert_eq!(next.headers.get(retry::ATTEMPT_HEADER), Some(&json!(next.attempt)));
        assert_eq!(next.attempt_header, Some(json!(next.attempt)));
    }

    assert_eq!(parked.header(retry::FAILURE_HEADER), Some(&json!("exhausted")));
    assert_eq!(parked.header(retry::ATTEMPTS_HEADER), Some(&json!(4)));
    assert_eq!(parked.header(retry::ORIGINAL_ROUTING_KEY_HEADER), Some(&json!(setup.queue)));
    let parked_at = parked.header(retry::PARKED_AT_HEADER).and_then(Value::as_str).expect("x-parked-at is a string");
    // `toISOString()` form: `2024-01-01T00:07:00.000Z`, between the emit and now.
    assert!(parked_at.len() == 24 && parked_at.ends_with('Z'), "{parked_at}");
    let parked_at = chrono::DateTime::parse_from_rfc3339(parked_at).expect("x-parked-at is an ISO timestamp");
    let minimum = policy.delays().iter().sum::<Duration>();
    assert!(parked_at >= emitted_at + minimum, "parked at {parked_at}, emitted at {emitted_at}");
    assert!(parked_at <= chrono::Utc::now(), "parked at {parked_at}, in the future");
    probe.assert_empty(&setup.queue).await;
    setup.finish(&probe).await;
}

#[tokio::test]
async fn a_message_waiting_for_its_retry_does_not_block_later_ones() {
    // One message at a time, and a long wait: if the failing message waited in the consumer
    // (or at the head of the main queue), the good one behind it would wait as long.
    let policy = RetryPolicy {
        max_attempts: 2,
        initial_delay: Duration::from_secs(30),
        multiplier: 1,
        max_delay: Duration::from_secs(30),
    };
    let setup = start(policy.clone(), 1).await;
    let probe = tests::BrokerProbe::connect(&setup.amqp_url).await;
    let started = Instant::now();
    setup.client.emit(&Flaky { n: 1, fail: true }).await.unwrap();
    setup.client.emit(&Flaky { n: 2, fail: false }).await.unwrap();
    tests::eventually(DEADLINE, || async {
        if setup.calls.of(2).is_empty() { Err("the good message was not handled") } else { Ok(()) }
    })
    .await;
    assert!(started.elapsed() < policy.initial_delay, "the good message waited {:?}", started.elapsed());
    // Meanwhile the failed one is waiting its turn in the delay queue, not in the main queue.
    assert_eq!(setup.calls.of(1).len(), 1);
    let retry_queue = topology::retry_queue_name(&setup.queue, policy.initial_delay);
    tests::eventually(DEADLINE, || async {
        match probe.message_count(&retry_queue).await {
            1 => Ok(()),
            n => Err(format!("{n} messages waiting in {retry_queue}")),
        }
    })
    .await;
    probe.assert_empty(&setup.queue).await;
    setup.finish(&probe).await;
}
