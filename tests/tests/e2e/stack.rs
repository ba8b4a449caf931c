//! The system under test: started in-process, or an external one found by URL.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::mailbox::Mailbox;
use shared::CancellationToken;
use tests::{DEADLINE, ServiceEnv, broker::BrokerProbe};

/// The event whose mails the tests count.
const USER_CREATED: &str = "user.created";

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
    /// The in-process stack's settlement probe; none for an external stack.
    settlement: Option<Settlement>,
}

/// What [`Stack::settle`] reads for an in-process stack: a tap queue bound to the events
/// exchange before any signup (one copy of every `user.created` publication), the
/// notification-service's `/metrics` (deliveries it settled) and auth-service's outbox.
struct Settlement {
    probe: BrokerProbe,
    tap: String,
    notification_queue: String,
    notification_ops: SocketAddr,
    auth_db: sqlx::PgPool,
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
            settlement: None,
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
            // Fifty signups at once: these tests are about the flow, not load shedding.
            .set("HASH_QUEUE_CAPACITY", "64")
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
        // Bound before auth-service starts: it sees every user.created the relay publishes.
        let probe = BrokerProbe::connect(auth_env.amqp_url()).await;
        let tap = tests::unique("e2e-user-created-tap");
        probe.declare_queue(&tap).await;
        probe.bind(&tap, auth_env.events_exchange(), USER_CREATED).await;
        let settlement = Settlement {
            probe,
            tap,
            notification_queue: notifications_env.notification_queue().to_owned(),
            notification_ops: notification.ops_addr(),
            auth_db: auth_env.db().pool().await,
        };
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
            settlement: Some(settlement),
        }
    }

    /// The barrier before counting mails (call it after at least one signup): returns once
    /// nothing the system did so far can still send one. In-process that is: auth-service's outbox holds no unpublished row
    /// (no further publication is coming) and the notification-service has settled (handled
    /// and acked, or parked) at least as many `user.created` deliveries as were published
    /// (counted by a tap queue), so a duplicate publication has been handled too, not just
    /// the first. A retried delivery does not count: it comes back.
    ///
    /// An external stack has neither the outbox nor the notification-service's ops port at
    /// hand: there a later user's welcome mail is the barrier (weaker: a duplicate of an
    /// earlier event may still be in flight on another consumer).
    pub async fn settle(&self, http: &reqwest::Client) {
        let Some(settlement) = &self.settlement else {
            let marker = format!("{}@example.com", tests::unique("settle-marker"));
            let response = http
                .post(format!("{}/auth/signup", self.auth_url))
                .json(&serde_json::json!({"email": marker, "password": "correct horse battery", "name": "Marker"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::CREATED, "the marker signup");
            tests::eventually(DEADLINE, || async {
                let mails = self.mailbox.mails_to(&marker).await.len();
                if mails > 0 { Ok(()) } else { Err(format!("no mail to the marker {marker} yet")) }
            })
            .await;
            return;
        };
        tests::eventually(DEADLINE, || settlement.settled(http)).await;
    }

    /// Stops an in-process stack, checks that nothing was parked in a dead-letter queue and
    /// removes its queues, exchange and databases.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(DEADLINE, task).await.expect("the stack stops in time").unwrap();
        }
        if let Some(settlement) = self.settlement.take() {
            settlement.probe.delete_queues(&[&settlement.tap]).await;
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

impl Settlement {
    /// `Ok` once the outbox is empty and the settled deliveries reach the publications.
    async fn settled(&self, http: &reqwest::Client) -> Result<(), String> {
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.auth_db)
            .await
            .map_err(|error| format!("reading the outbox: {error}"))?;
        if unpublished > 0 {
            return Err(format!("{unpublished} outbox row(s) not published yet"));
        }
        // Read before the metrics: a publication counted here was settled if the count below
        // reaches it (the outbox is empty, so no new one can come in between).
        let published = u64::from(self.probe.message_count(&self.tap).await);
        if published == 0 {
            // Every test settles after a signup: a tap that saw nothing would make the barrier empty.
            return Err(format!("the tap {} saw no {USER_CREATED} yet", self.tap));
        }
        let metrics = http
            .get(format!("http://{}/metrics", self.notification_ops))
            .send()
            .await
            .map_err(|error| error.to_string())?
            .text()
            .await
            .map_err(|error| error.to_string())?;
        let settled = settled_deliveries(&metrics, &self.notification_queue);
        if settled >= published {
            Ok(())
        } else {
            Err(format!(
                "{settled} of {published} published {USER_CREATED} deliveries settled by the notification-service"
            ))
        }
    }
}

/// The `user.created` deliveries of `queue` that the transport settled for good (`ok` or
/// `parked`; `retried` ones come back), from a Prometheus text rendering.
fn settled_deliveries(metrics: &str, queue: &str) -> u64 {
    let queue_label = format!("queue=\"{queue}\"");
    let pattern_label = format!("pattern=\"{USER_CREATED}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("transport_messages_total{"))
        .filter(|line| line.contains(&queue_label) && line.contains(&pattern_label))
        .filter(|line| line.contains("outcome=\"ok\"") || line.contains("outcome=\"parked\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
