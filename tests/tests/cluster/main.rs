//! The workspace on a local three-node RabbitMQ cluster with quorum queues ([`LocalCluster`]):
//! the whole flow keeps moving while the node the services use (and that leads their queues)
//! is stopped and started again, RPC calls fail only when they were in flight on the lost
//! link, NestJS peers with `urls: [three nodes]` interoperate, and every queue is a quorum
//! queue.
//!
//! The tests of this binary share one cluster (started by the first that needs it, about
//! 30 s; its nodes halt when the test process ends) and take turns, since one of them stops
//! a node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod failover;
mod interop;
mod stack;
mod transport;

use tests::cluster::LocalCluster;
use tokio::sync::{Mutex, MutexGuard, OnceCell};

static CLUSTER: OnceCell<LocalCluster> = OnceCell::const_new();
static TURN: Mutex<()> = Mutex::const_new(());

/// The binary's cluster, and the turn to use it alone.
pub async fn cluster() -> (&'static LocalCluster, MutexGuard<'static, ()>) {
    let turn = TURN.lock().await;
    let cluster = CLUSTER.get_or_init(|| LocalCluster::start(3)).await;
    for index in 0..cluster.size() {
        cluster.start_node(index).await;
    }
    (cluster, turn)
}

/// Asserts that every queue whose name starts with one of `prefixes` is a quorum queue, and
/// that there is at least one per prefix.
pub async fn assert_all_quorum(cluster: &LocalCluster, prefixes: &[&str]) {
    let queues = cluster.list_queues().await;
    for prefix in prefixes {
        let ours: Vec<_> = queues.iter().filter(|queue| queue.name.starts_with(prefix)).collect();
        assert!(!ours.is_empty(), "no queue {prefix}* on the cluster: {queues:?}");
        for queue in ours {
            assert_eq!(queue.kind, "quorum", "{queue:?}");
        }
    }
}
