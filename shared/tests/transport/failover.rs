//! Failing over between nodes, on one broker: two addresses in front of it play two nodes.
//! A call made while the client fails over waits for the next node instead of failing.

use std::{net::SocketAddr, time::Duration};

use shared::{BrokerConfig, CancellationToken, Client, ClientConfig, SendOptions};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::{DEADLINE, Echo, Fixture};

/// A node that is slow to answer: it accepts connections and holds them, without a byte
/// either way, until [`Gate::open`]; then forwards them to the broker.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: watch::Sender<usize>,
    accepting: JoinHandle<()>,
}

impl Gate {
    async fn in_front_of(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = watch::Sender::new(false);
        let accepted = watch::Sender::new(0);
        let accepting = tokio::spawn(accept(listener, upstream, open.subscribe(), accepted.clone()));
        Self { addr, open, accepted, accepting }
    }

    fn url_for(&self, original_url: &str) -> String {
        tests::urls::with_host_port(original_url, &self.addr.to_string())
    }

    /// Waits until `count` connections were accepted (and are held while closed).
    async fn wait_accepted(&self, count: usize) {
        let mut accepted = self.accepted.subscribe();
        let seen = tokio::time::timeout(DEADLINE, accepted.wait_for(|seen| *seen >= count)).await;
        assert!(matches!(seen, Ok(Ok(_))), "the gate saw no connection attempt within {DEADLINE:?}");
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    open: watch::Receiver<bool>,
    accepted: watch::Sender<usize>,
) {
    while let Ok((client, _peer)) = listener.accept().await {
        accepted.send_modify(|count| *count += 1);
        let mut open = open.clone();
        tokio::spawn(async move {
            // Ends (dropping the connection) when the gate is dropped unopened.
            if open.wait_for(|open| *open).await.is_err() {
                return;
            }
            let (mut client, mut server) = (client, TcpStream::connect(upstream).await.unwrap());
            let _ended = copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

#[tokio::test]
async fn a_call_made_while_the_client_fails_over_waits_for_the_next_node_and_is_answered() {
    let fixture = Fixture::start().await;
    let first = tests::ChaosProxy::in_front_of(&fixture.amqp_url).await;
    let next = Gate::in_front_of(first.upstream()).await;
    let urls = format!("{},{}", first.url_for(&fixture.amqp_url), next.url_for(&fixture.amqp_url));
    let mut broker = BrokerConfig::new(urls, "transport-test-failover");
    broker.shuffle = false; // the first node first, so that the second is the one failed over to
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = Client::start(ClientConfig::new(broker).queue(fixture.queue.clone()), shutdown.clone());
    assert!(client.wait_connected(DEADLINE).await, "client did not connect");
    assert_eq!(client.node(), Some(first.addr().to_string()));
    assert_eq!(client.send(&Echo { text: "before".into(), delay_ms: 0 }).await.unwrap().text, "before");

    // The node in use goes away; the client fails over to the next, which takes its time.
    first.cut().await;
    next.wait_accepted(1).await;
    assert!(!client.is_connected());
    let caller = client.clone();
    let mut call = tokio::spawn(async move {
        let options = SendOptions { timeout: Some(Duration::from_secs(30)), ..SendOptions::default() };
        caller.send_with(&Echo { text: "during".into(), delay_ms: 0 }, options).await
    });
    // Failing fast would answer within microseconds; waiting for the next node does not answer
    // before it is reached (the gate holds it well within the 5 s a node may take to connect).
    let early = tokio::time::timeout(Duration::from_millis(500), &mut call).await;
    assert!(early.is_err(), "a call made during the failover did not wait for the next node: {early:?}");

    next.open();
    let answered = tokio::time::timeout(DEADLINE, call).await.expect("the call was not answered after the failover");
    assert_eq!(answered.unwrap().unwrap().text, "during");
    assert_eq!(client.node(), Some(next.addr.to_string()), "failed over to the next node");
}
