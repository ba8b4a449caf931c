//! The system under test: started in-process, or an external one found by URL.

use std::collections::HashMap;

use tokio::task::JoinHandle;

use crate::mailbox::Mailbox;
use shared::CancellationToken;

/// A running system: where its HTTP API is, how to read its mail, how to reach its broker.
pub struct Stack {
    pub auth_url: String,
    pub amqp_url: String,
    pub user_queue: String,
    pub mailbox: Mailbox,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _databases: Vec<tests::TestDb>,
    _exchange_cleanup: Option<(String, Vec<String>)>,
}

impl Stack {
    /// The stack named by `E2E_STACK=1` and its URLs, else a fresh in-process one.
    pub async fn start() -> Stack {
        tests::logs::init();
        if std::env::var("E2E_STACK").is_ok_and(|value| value == "1") {
            Self::external()
        } else {
            Self::in_process().await
        }
    }

    fn external() -> Stack {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Stack {
            auth_url: var("E2E_AUTH_URL", "http://127.0.0.1:3000"),
            amqp_url: var("E2E_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            user_queue: var("E2E_USER_QUEUE", "user_queue"),
            mailbox: Mailbox::mailpit(var("E2E_MAILPIT_URL", "http://127.0.0.1:8025")),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            _databases: Vec::new(),
            _exchange_cleanup: None,
        }
    }

    /// The three services through the same `App::build` their binaries run, on port 0, each
    /// with a fresh database, all on this test's own queues and exchange.
    async fn in_process() -> Stack {
        let amqp_url = tests::amqp_url().await;
        let smtp = tests::smtp::SmtpSink::start().await;
        let (auth_db, users_db, notifications_db) =
            (tests::TestDb::create().await, tests::TestDb::create().await, tests::TestDb::create().await);
        let exchange = tests::unique("e2e_events");
        let user_queue = tests::unique("e2e_user");
        let user_events_queue = tests::unique("e2e_user_events");
        let notification_queue = tests::unique("e2e_notification");
        let common = HashMap::from([
            ("AMQP_URL", amqp_url.clone()),
            ("EVENTS_EXCHANGE", exchange.clone()),
            ("USER_QUEUE", user_queue.clone()),
            ("USER_EVENTS_QUEUE", user_events_queue.clone()),
            ("NOTIFICATION_QUEUE", notification_queue.clone()),
            ("SMTP_URL", smtp.url()),
            ("OPS_ADDR", "127.0.0.1:0".to_owned()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("JWT_SECRET", "an end-to-end test secret of at least 32 bytes".to_owned()),
            ("RATE_LIMIT_PER_SECOND", "1000".to_owned()),
            ("RATE_LIMIT_BURST", "1000".to_owned()),
            // Cheap hashing: these tests are about the flow, the bench measures argon2id.
            ("ARGON2_M_COST", "1024".to_owned()),
            ("ARGON2_T_COST", "1".to_owned()),
            ("RETRY_INITIAL_DELAY_MS", "200".to_owned()),
            ("OUTBOX_POLL_MS", "500".to_owned()),
        ]);
        let lookup = |database: &tests::TestDb| {
            let mut vars = common.clone();
            vars.insert("DATABASE_URL", database.url.clone());
            move |name: &str| vars.get(name).cloned()
        };
        let shutdown = CancellationToken::new();

        let user =
            user_service::App::build(user_service::Config::from_lookup(lookup(&users_db)).unwrap(), shutdown.clone())
                .await
                .unwrap();
        assert!(user.wait_ready(crate::DEADLINE).await, "user-service did not become ready");
        let notification = notification_service::App::build(
            notification_service::Config::from_lookup(lookup(&notifications_db)).unwrap(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(notification.wait_ready(crate::DEADLINE).await, "notification-service did not become ready");
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
        let queues = [&user_queue, &user_events_queue, &notification_queue]
            .iter()
            .flat_map(|queue| [queue.to_string(), shared::topology::dlq_name(queue)])
            .collect();
        Stack {
            auth_url,
            amqp_url,
            user_queue,
            mailbox: Mailbox::sink(smtp),
            shutdown,
            tasks,
            _databases: vec![auth_db, users_db, notifications_db],
            _exchange_cleanup: Some((exchange, queues)),
        }
    }

    /// Stops an in-process stack and checks nothing was parked in a dead-letter queue.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        if let Some((exchange, queues)) = self._exchange_cleanup.take() {
            let probe = tests::BrokerProbe::connect(&self.amqp_url).await;
            for dlq in queues.iter().filter(|queue| queue.ends_with(".dlq")) {
                probe.assert_empty(dlq).await;
            }
            let names: Vec<&str> = queues.iter().map(String::as_str).collect();
            probe.delete_queues(&names).await;
            probe.delete_exchange(&exchange).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
