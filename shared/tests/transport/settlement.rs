//! Reply and ack are two steps: what happens, and what the caller sees, when one of them
//! fails while the other does not.
//!
//! - The link breaks while the request is handled: neither the reply nor the ack reaches the
//!   broker, which requeues the request; the server handles it again after reconnecting and
//!   that run's reply answers the caller, who sees one ordinary reply (handlers of requests
//!   must therefore tolerate running twice).
//! - The reply goes out but the request is not acked (here: its parking as a poison request
//!   fails, so it is handed back): it is delivered and answered again until it can be
//!   settled. The caller takes the first reply; the later ones are late replies, dropped.
//! - The caller's reply address is gone (the caller's link broke): the reply is dropped by the
//!   broker, the ack succeeds, the request is not handled again; the caller saw `Unavailable`
//!   when its link broke.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use shared::{
    BrokerConfig, CancellationToken, Client, ClientConfig, Listener, MessageContext, Request, RpcError, RpcException,
    SendOptions, Server, ServerConfig, ServerHandle, State,
};
use tokio::sync::{Notify, Semaphore};

use crate::DEADLINE;

/// `{cmd:"held"}`: its handler waits for the test's permit, then answers its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    text: String,
}

impl Request for Held {
    type Response = String;
    const PATTERN: &'static str = r#"{"cmd":"held"}"#;
}

/// Every handler entry (whether the broker said it was redelivered) and the permits.
struct Desk {
    entries: Mutex<Vec<bool>>,
    entered: Notify,
    release: Semaphore,
}

async fn held(State(desk): State<Arc<Desk>>, ctx: MessageContext, request: Held) -> Result<String, RpcException> {
    desk.entries.lock().unwrap().push(ctx.redelivered);
    desk.entered.notify_one();
    desk.release.acquire().await.expect("the semaphore stays open").forget();
    Ok(request.text)
}

struct Setup {
    amqp_url: String,
    queue: String,
    desk: Arc<Desk>,
    server: ServerHandle,
    shutdown: CancellationToken,
}

async fn start(server_url: &str) -> Setup {
    tests::logs::init();
    let amqp_url = tests::amqp_url().await;
    let queue = tests::unique("settle");
    let desk = Arc::new(Desk { entries: Mutex::default(), entered: Notify::new(), release: Semaphore::new(0) });
    let config = ServerConfig::new(BrokerConfig::new(server_url, "settle-test"), "settle-test");
    let shutdown = CancellationToken::new();
    let server =
        Server::new(Arc::clone(&desk)).request(held).listen(Listener::queue(&queue)).start(config, shutdown.clone());
    assert!(server.wait_ready(DEADLINE).await, "server did not become ready");
    Setup { amqp_url, queue, desk, server, shutdown }
}

impl Setup {
    fn client(&self, url: &str) -> Client {
        let config = ClientConfig::new(BrokerConfig::new(url, "settle-client")).queue(&self.queue);
        Client::start(config, self.shutdown.clone())
    }

    fn entries(&self) -> Vec<bool> {
        self.desk.entries.lock().unwrap().clone()
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.server.stopped().await;
        // A request the server failed to ack would be back in its queue now.
        let probe = tests::BrokerProbe::connect(&self.amqp_url).await;
        probe.assert_empty(&self.queue).await;
        probe.assert_empty(&shared::topology::dlq_name(&self.queue)).await;
        crate::delete_queue_and_failure_queues(&probe, &self.queue, &shared::RetryPolicy::default()).await;
    }
}

fn patient() -> SendOptions {
    SendOptions { timeout: Some(Duration::from_secs(60)), ..SendOptions::default() }
}

#[tokio::test]
async fn a_request_whose_reply_and_ack_were_lost_is_handled_again_and_answers_the_caller() {
    let amqp_url = tests::amqp_url().await;
    let server_link = tests::ChaosProxy::in_front_of(&amqp_url).await;
    let setup = start(&server_link.url_for(&amqp_url)).await;
    let client = setup.client(&amqp_url);
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    let caller = client.clone();
    let call = tokio::spawn(async move { caller.send_with(&Held { text: "once".into() }, patient()).await });
    tokio::time::timeout(DEADLINE, setup.desk.entered.notified()).await.expect("the handler never started");
    // The server's link breaks while the handler runs: its reply and its ack go nowhere.
    server_link.cut().await;
    setup.desk.release.add_permits(1);
    server_link.restore();

    // The broker requeued the unacked request; the reconnected server handles it again.
    tests::eventually(DEADLINE, || async {
        let entries = setup.entries();
        if entries.len() == 2 { Ok(()) } else { Err(format!("{} handler entries", entries.len())) }
    })
    .await;
    assert_eq!(setup.entries(), [false, true], "the second run is a redelivery");
    setup.desk.release.add_permits(1);
    let reply = tokio::time::timeout(DEADLINE, call).await.expect("the caller was never answered").unwrap();
    assert_eq!(reply.unwrap(), "once");
    // Settled now: a later request is the only other run (the stop in `finish` would hand
    // back anything left unacked).
    setup.desk.release.add_permits(1);
    assert_eq!(client.send_with(&Held { text: "next".into() }, patient()).await.unwrap(), "next");
    assert_eq!(setup.entries(), [false, true, false]);
    setup.finish().await;
}

#[tokio::test]
async fn a_reply_to_a_caller_that_is_gone_is_dropped_and_the_request_acked_once() {
    let amqp_url = tests::amqp_url().await;
    let setup = start(&amqp_url).await;
    let caller_link = tests::ChaosProxy::in_front_of(&amqp_url).await;
    let client = setup.client(&caller_link.url_for(&amqp_url));
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");

    let caller = client.clone();
    let call = tokio::spawn(async move { caller.send_with(&Held { text: "lost".into() }, patient()).await });
    tokio::time::timeout(DEADLINE, setup.desk.entered.notified()).await.expect("the handler never started");
    // The caller's link breaks: its call fails at once, and its reply address dies with it.
    caller_link.cut().await;
    let result = tokio::time::timeout(Duration::from_secs(5), call).await.expect("the call did not fail").unwrap();
    assert!(matches!(result, Err(RpcError::Unavailable { .. })), "{result:?}");
    setup.desk.release.add_permits(1);

    // The server answers into the void and acks: the request is settled, not redelivered,
    // and the server keeps serving (the dead address did not cost it its channel).
    caller_link.restore();
    assert!(client.wait_connected(DEADLINE).await, "client did not reconnect");
    setup.desk.release.add_permits(1);
    let reply = client.send_with(&Held { text: "later".into() }, patient()).await.unwrap();
    assert_eq!(reply, "later");
    assert_eq!(setup.entries(), [false, false], "the lost request was not handled again");
    setup.finish().await;
}

#[tokio::test]
async fn a_request_answered_but_not_acked_is_delivered_and_answered_again_until_settled() {
    let fixture = crate::Fixture::start().await;
    let probe = tests::BrokerProbe::connect(&fixture.amqp_url).await;
    // Its DLQ gone, a poison request is answered, then its parking is returned unroutable and
    // the request handed back instead of acked.
    probe.delete_queues(&[&fixture.dlq()]).await;
    let caller = tests::unique("caller");
    probe.declare_queue(&caller).await;
    let properties =
        lapin::BasicProperties::default().with_reply_to(caller.as_str().into()).with_correlation_id("call-1".into());
    let request = br#"{"pattern":{"cmd":"echo"},"data":null,"id":"call-1"}"#;
    probe.publish_raw("", &fixture.queue, request, properties).await;
    for _ in 0..2 {
        let reply = probe.wait_for_message(&caller, DEADLINE).await;
        assert_eq!(reply.correlation_id.as_deref(), Some("call-1"));
        assert_eq!(reply.json()["err"]["status"], serde_json::json!(400));
    }
    // Our client as the caller: one answer, the repeated ones dropped as late replies.
    let error = fixture.client.send_raw(&serde_json::json!({"cmd": "echo"}), &serde_json::Value::Null, patient()).await;
    assert!(matches!(&error, Err(RpcError::Remote { error, .. }) if error.status() == Some(400)), "{error:?}");

    // With the DLQ back, both requests are parked and acked: the answers stop.
    probe.declare_queue(&fixture.dlq()).await;
    probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    probe.wait_for_message(&fixture.dlq(), DEADLINE).await;
    let mut fixture = fixture;
    fixture.stop_server().await;
    probe.assert_empty(&fixture.queue).await;
    probe.delete_queues(&[&caller]).await;
}
