//! The system under test: started in-process, or an external one found by URL.

use tokio::task::JoinHandle;

use crate::mailbox::Mailbox;
use shared::CancellationToken;
use tests::{DEADLINE, ServiceEnv};

/// A running system: where its HTTP API is, how to read its mail, how to reach its broker.
pub struct Stack {
    pub auth_url: String,
    pub amqp_url: String,
    pub user_queue: String,
    pub mailbox: Mailbox,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The in-process stack's environments (auth first); none for an external stack.
    envs: Vec<ServiceEnv>,
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
            envs: Vec::new(),
        }
    }

    /// The three services through the same `App::build` their binaries run, on port 0, each
    /// with a fresh database, all on this test's own queues and exchange (one
    /// [`ServiceEnv`] and two siblings).
    async fn in_process() -> Stack {
        let smtp = tests::smtp::SmtpSink::start().await;
        let auth_env = ServiceEnv::new()
            .await
            .set("SMTP_URL", smtp.url())
            .set("JWT_SECRET", "an end-to-end test secret of at least 32 bytes")
            .set("RATE_LIMIT_PER_SECOND", "1000")
            .set("RATE_LIMIT_BURST", "1000")
            // Cheap hashing: these tests are about the flow, the bench measures argon2id.
            .set("ARGON2_M_COST", "1024")
            .set("ARGON2_T_COST", "1")
            .set("OUTBOX_POLL_MS", "500");
        let (users_env, notifications_env) = tokio::join!(auth_env.sibling(), auth_env.sibling());
        let shutdown = CancellationToken::new();

        let user_config = user_service::Config::from_lookup(|name| users_env.lookup(name)).unwrap();
        let user = user_service::App::build(user_config, shutdown.clone()).await.unwrap();
        assert!(user.wait_ready(DEADLINE).await, "user-service did not become ready");
        let notification_config =
            notification_service::Config::from_lookup(|name| notifications_env.lookup(name)).unwrap();
        let notification = notification_service::App::build(notification_config, shutdown.clone()).await.unwrap();
        assert!(notification.wait_ready(DEADLINE).await, "notification-service did not become ready");
        let auth_config = auth_service::Config::from_lookup(|name| auth_env.lookup(name)).unwrap();
        let auth = auth_service::App::build(auth_config, shutdown.clone()).await.unwrap();
        let auth_url = format!("http://{}", auth.http_addr());

        let tasks = vec![
            tokio::spawn(user.run_until_stopped()),
            tokio::spawn(notification.run_until_stopped()),
            tokio::spawn(auth.run_until_stopped()),
        ];
        Stack {
            auth_url,
            amqp_url: auth_env.amqp_url().to_owned(),
            user_queue: auth_env.user_queue().to_owned(),
            mailbox: Mailbox::sink(smtp),
            shutdown,
            tasks,
            envs: vec![auth_env, users_env, notifications_env],
        }
    }

    /// Stops an in-process stack, checks that nothing was parked in a dead-letter queue and
    /// removes its queues, exchange and databases.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(DEADLINE, task).await.expect("the stack stops in time").unwrap();
        }
        let mut envs = std::mem::take(&mut self.envs).into_iter();
        if let Some(auth_env) = envs.next() {
            // One finish covers the broker objects the three services share.
            auth_env.finish().await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
