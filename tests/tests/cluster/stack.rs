//! The three services in-process (through the `App::build` their binaries run), connected to
//! the cluster with every node's URL and quorum queues, each with a fresh database, on this
//! test's own queues and exchange.

use std::{collections::HashMap, sync::Arc};

use shared::CancellationToken;
use sqlx::PgPool;
use tests::{TestDb, cluster::LocalCluster, smtp::SmtpSink};
use tokio::task::JoinHandle;

/// A running system on the cluster.
pub struct ClusterStack {
    pub auth_url: String,
    pub user_queue: String,
    pub user_events_queue: String,
    pub notification_queue: String,
    pub smtp: Arc<SmtpSink>,
    pub auth_db: PgPool,
    pub users_db: PgPool,
    pub notifications_db: PgPool,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _databases: Vec<TestDb>,
}

impl ClusterStack {
    /// Starts the three services with `AMQP_URL` listing every node, in node order, and
    /// `AMQP_SHUFFLE_URLS=false`: they all connect to node 0 first and declare their queues
    /// there, so node 0 both carries their connections and leads their queues.
    pub async fn start(cluster: &LocalCluster) -> ClusterStack {
        tests::logs::init();
        let smtp = SmtpSink::start().await;
        let (auth_db, users_db, notifications_db) = tokio::join!(TestDb::create(), TestDb::create(), TestDb::create());
        let exchange = tests::unique("cluster_events");
        let user_queue = tests::unique("cluster_user");
        let user_events_queue = tests::unique("cluster_user_events");
        let notification_queue = tests::unique("cluster_notification");
        let common = HashMap::from([
            ("AMQP_URL", cluster.urls()),
            ("AMQP_QUEUE_TYPE", "quorum".to_owned()),
            ("AMQP_SHUFFLE_URLS", "false".to_owned()),
            ("AMQP_RECONNECT_MAX_MS", "1000".to_owned()),
            ("EVENTS_EXCHANGE", exchange.clone()),
            ("USER_QUEUE", user_queue.clone()),
            ("USER_EVENTS_QUEUE", user_events_queue.clone()),
            ("NOTIFICATION_QUEUE", notification_queue.clone()),
            ("SMTP_URL", smtp.url()),
            ("OPS_ADDR", "127.0.0.1:0".to_owned()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("JWT_SECRET", "a cluster failover test secret of at least 32 bytes".to_owned()),
            ("RATE_LIMIT_PER_SECOND", "100000".to_owned()),
            ("RATE_LIMIT_BURST", "100000".to_owned()),
            // Cheap hashing: these tests are about the flow, the bench measures argon2id.
            ("ARGON2_M_COST", "1024".to_owned()),
            ("ARGON2_T_COST", "1".to_owned()),
            ("RETRY_INITIAL_DELAY_MS", "200".to_owned()),
            ("OUTBOX_POLL_MS", "500".to_owned()),
        ]);
        let lookup = |database: &TestDb| {
            let mut vars = common.clone();
            vars.insert("DATABASE_URL", database.url.clone());
            move |name: &str| vars.get(name).cloned()
        };
        let shutdown = CancellationToken::new();
        let user =
            user_service::App::build(user_service::Config::from_lookup(lookup(&users_db)).unwrap(), shutdown.clone())
                .await
                .unwrap();
        assert!(user.wait_ready(tests::DEADLINE).await, "user-service did not become ready");
        let notification = notification_service::App::build(
            notification_service::Config::from_lookup(lookup(&notifications_db)).unwrap(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(notification.wait_ready(tests::DEADLINE).await, "notification-service did not become ready");
        let auth =
            auth_service::App::build(auth_service::Config::from_lookup(lookup(&auth_db)).unwrap(), shutdown.clone())
                .await
                .unwrap();
        let auth_url = format!("http://{}", auth.http_addr());
        let tasks = vec![
            tokio::spawn(user.run_until_stopped()),
            tokio::spawn(notification.run_until_stopped()),
            tokio::spawn(auth.run_until_stopped()),
        ];
        let (auth_pool, users_pool, notifications_pool) =
            (auth_db.pool().await, users_db.pool().await, notifications_db.pool().await);
        ClusterStack {
            auth_url,
            user_queue,
            user_events_queue,
            notification_queue,
            smtp: Arc::new(smtp),
            auth_db: auth_pool,
            users_db: users_pool,
            notifications_db: notifications_pool,
            shutdown,
            tasks,
            _databases: vec![auth_db, users_db, notifications_db],
        }
    }

    /// The queues the services own or consume, failure queues included.
    pub fn queue_prefixes(&self) -> [&str; 3] {
        [&self.user_queue, &self.user_events_queue, &self.notification_queue]
    }

    /// The dead-letter queues.
    pub fn dlqs(&self) -> Vec<String> {
        self.queue_prefixes().iter().map(|queue| shared::topology::dlq_name(queue)).collect()
    }

    /// Stops the services and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }
}

impl Drop for ClusterStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
