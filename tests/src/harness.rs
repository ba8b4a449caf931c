//! The service harness: everything a service under test needs around it, handed over the way
//! the service reads it, as environment variables for its `Config::from_lookup`.
//!
//! ```text
//! let env = tests::ServiceEnv::new().await.set("PREFETCH", "4");
//! let config = notification_service::Config::from_lookup(|name| env.lookup(name)).expect("test configuration");
//! let app = notification_service::App::build(config, shutdown.clone()).await.expect("the service starts");
//! assert!(app.wait_ready(tests::DEADLINE).await);
//! // … the test, waiting with tests::eventually(tests::DEADLINE, …) …
//! shutdown.cancel();
//! app.run_until_stopped().await;
//! env.finish().await; // no dead letters, then the test's queues and exchange are deleted
//! ```
//!
//! A [`ServiceEnv`] answers [`ServiceEnv::lookup`] for these names (and for whatever a test adds
//! with [`ServiceEnv::set`], which also overrides any of them but the four names):
//!
//! | variable | value |
//! | --- | --- |
//! | `AMQP_URL` | the shared RabbitMQ ([`crate::amqp_url`]) |
//! | `DATABASE_URL` | a fresh, empty database of this env's own ([`crate::TestDb`]), dropped with it |
//! | `USER_QUEUE`, `USER_EVENTS_QUEUE`, `NOTIFICATION_QUEUE`, `EVENTS_EXCHANGE` | unique names (`user_queue_<hex>`, …) |
//! | `RETRY_MAX_ATTEMPTS`, `RETRY_INITIAL_DELAY_MS`, `RETRY_MULTIPLIER`, `RETRY_MAX_DELAY_MS` | `3`, `50`, `2`, `200`: a failing event is parked within a second |
//! | `OPS_ADDR`, `HTTP_ADDR` | `127.0.0.1:0` (ask the app for its bound addresses) |
//!
//! Guarantees and rules:
//! - Tests never share a queue, exchange or database, so they run in parallel and re-run
//!   without cleanup by hand.
//! - [`DEADLINE`] is the one patience of the workspace: for readiness, `eventually`, mail,
//!   shutdown.
//! - Cleanup: [`ServiceEnv::finish`] asserts that no dead-letter queue of the env's queues holds
//!   a message (take the ones a test expects off with the probe first), then deletes the
//!   queues, their `.dlq` and `.retry.<ms>ms` queues and the exchange. A test that panics
//!   before `finish` still gets them deleted when the env is dropped. Stop the services first:
//!   a running consumer would declare its queues again.
//! - Set retries through the `RETRY_*` variables, not by editing the `Config`: the cleanup
//!   derives the delay queues to delete from them ([`ServiceEnv::retry_delays`]).
//! - Several services of one stack share the names and the broker, each with a database of
//!   its own: [`ServiceEnv::sibling`].
//! - Dead-letter and delay queue names: `shared::topology::{dlq_name, retry_queue_name}` in
//!   the services' tests ([`crate::names::dlq`] and [`crate::names::retry_queue`] are the same
//!   convention, for the kit itself).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{BrokerProbe, TestDb, infra, logs, names, teardown};

/// How long anything a test waits for may take: a service getting ready, an event being
/// handled, a mail arriving, a shutdown. Long enough for a loaded 2-core CI machine, short
/// enough that a hang fails quickly.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long the broker cleanup of a dropped env may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The variables naming broker objects: generated per env, never overridden (the cleanup
/// would miss a name it did not make).
const NAME_VARS: [&str; 4] = ["USER_QUEUE", "USER_EVENTS_QUEUE", "NOTIFICATION_QUEUE", "EVENTS_EXCHANGE"];

/// The fast retry policy, as the variables every service reads.
const RETRY_DEFAULTS: [(&str, u64); 4] =
    [("RETRY_MAX_ATTEMPTS", 3), ("RETRY_INITIAL_DELAY_MS", 50), ("RETRY_MULTIPLIER", 2), ("RETRY_MAX_DELAY_MS", 200)];

/// The environment of one service under test (see the module docs).
pub struct ServiceEnv {
    vars: BTreeMap<String, String>,
    topology: Arc<Topology>,
    db: TestDb,
}

impl ServiceEnv {
    /// A fresh database and unique names on the shared broker, with the test defaults. Also
    /// installs the test logger ([`crate::logs::init`]).
    ///
    /// # Panics
    /// When RabbitMQ or Postgres cannot be found or the database cannot be created.
    pub async fn new() -> ServiceEnv {
        logs::init();
        let (amqp_url, db) = tokio::join!(infra::amqp_url(), TestDb::create());
        let names = NAME_VARS.map(|var| names::unique(&var.to_ascii_lowercase()));
        let mut vars: BTreeMap<String, String> =
            NAME_VARS.iter().zip(&names).map(|(var, name)| ((*var).to_owned(), name.clone())).collect();
        vars.extend(RETRY_DEFAULTS.iter().map(|(var, value)| ((*var).to_owned(), value.to_string())));
        vars.insert("AMQP_URL".to_owned(), amqp_url.clone());
        vars.insert("DATABASE_URL".to_owned(), db.url.clone());
        vars.insert("OPS_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        vars.insert("HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        let [user_queue, user_events_queue, notification_queue, events_exchange] = names;
        let topology = Topology {
            amqp_url,
            queues: vec![user_queue, user_events_queue, notification_queue],
            exchange: events_exchange,
            retry_delays: Mutex::default(),
            deleted: AtomicBool::new(false),
        };
        let env = ServiceEnv { vars, topology: Arc::new(topology), db };
        env.topology.note_delays(env.retry_delays());
        env
    }

    /// Another service of the same stack: the same names, broker and variables (overrides
    /// included), with a fresh database of its own. The broker objects are cleaned up once,
    /// by whichever env finishes (or is dropped last).
    ///
    /// # Panics
    /// When the database cannot be created.
    pub async fn sibling(&self) -> ServiceEnv {
        let db = TestDb::create().await;
        let mut vars = self.vars.clone();
        vars.insert("DATABASE_URL".to_owned(), db.url.clone());
        ServiceEnv { vars, topology: Arc::clone(&self.topology), db }
    }

    /// Sets (or overrides) one variable, e.g. `.set("PREFETCH", "4")`, or `DATABASE_URL` and
    /// `AMQP_URL` pointing at a [`crate::ChaosProxy`].
    ///
    /// # Panics
    /// For the queue and exchange names, which the env owns.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> ServiceEnv {
        assert!(!NAME_VARS.contains(&name), "{name} is generated by the harness, so that its cleanup finds it");
        self.vars.insert(name.to_owned(), value.into());
        if name.starts_with("RETRY_") {
            self.topology.note_delays(self.retry_delays());
        }
        self
    }

    /// The value of one variable, as `Config::from_lookup` asks for it.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// Every variable this env sets.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The RabbitMQ itself (also when `AMQP_URL` was set to a proxy in front of it).
    pub fn amqp_url(&self) -> &str {
        &self.topology.amqp_url
    }

    /// This env's database (also when `DATABASE_URL` was set to a proxy in front of it).
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// `USER_QUEUE`: the user-service's RPC queue.
    pub fn user_queue(&self) -> &str {
        &self.topology.queues[0]
    }

    /// `USER_EVENTS_QUEUE`: the user-service's `user.created` queue.
    pub fn user_events_queue(&self) -> &str {
        &self.topology.queues[1]
    }

    /// `NOTIFICATION_QUEUE`: the notification-service's `user.created` queue.
    pub fn notification_queue(&self) -> &str {
        &self.topology.queues[2]
    }

    /// `EVENTS_EXCHANGE`: the topic exchange events are published to.
    pub fn events_exchange(&self) -> &str {
        &self.topology.exchange
    }

    /// The distinct delays of the retry policy the `RETRY_*` variables describe, one delay
    /// queue each: attempt `n` waits `initial × multiplierⁿ⁻¹`, at most the maximum (the rule of
    /// `shared::RetryPolicy::delays`, checked against it in `tests/tests/kit_infra.rs`).
    pub fn retry_delays(&self) -> Vec<Duration> {
        let number = |var: &str| {
            let default = RETRY_DEFAULTS.iter().find(|(name, _)| *name == var).map_or(0, |(_, value)| *value);
            self.vars.get(var).and_then(|value| value.trim().parse::<u64>().ok()).unwrap_or(default)
        };
        let (initial, max) = (
            Duration::from_millis(number("RETRY_INITIAL_DELAY_MS")),
            Duration::from_millis(number("RETRY_MAX_DELAY_MS")),
        );
        let multiplier = u32::try_from(number("RETRY_MULTIPLIER")).unwrap_or(u32::MAX);
        let attempts = u32::try_from(number("RETRY_MAX_ATTEMPTS")).unwrap_or(u32::MAX);
        let mut delays: Vec<Duration> = (1..attempts)
            .map(|attempt| initial.saturating_mul(multiplier.saturating_pow((attempt - 1).min(30))).min(max))
            .collect();
        delays.dedup();
        delays
    }

    /// Ends the test's use of the broker: asserts that no dead-letter queue of this env's
    /// queues holds a message, then deletes the queues (with their dead-letter and delay
    /// queues) and the exchange, and drops the database. Call it once every service using the
    /// env (and its siblings) has stopped.
    ///
    /// # Panics
    /// When a dead-letter queue holds a message (showing the first one), or RabbitMQ cannot be
    /// reached.
    pub async fn finish(self) {
        let probe = BrokerProbe::connect(&self.topology.amqp_url).await;
        for queue in &self.topology.queues {
            let dlq = names::dlq(queue);
            if !probe.queue_exists(&dlq).await {
                continue;
            }
            let parked = probe.message_count(&dlq).await;
            if parked > 0 {
                let first = probe.get(&dlq).await;
                panic!("{dlq} holds {parked} parked message(s); the first: {first:?}");
            }
        }
        self.topology.delete(&probe).await;
    }
}

/// The broker objects of one env and its siblings, deleted once.
struct Topology {
    amqp_url: String,
    /// The consumer queues: user, user events, notification.
    queues: Vec<String>,
    exchange: String,
    /// Every delay any env of this topology was configured with.
    retry_delays: Mutex<BTreeSet<Duration>>,
    deleted: AtomicBool,
}

impl Topology {
    fn note_delays(&self, delays: Vec<Duration>) {
        self.retry_delays.lock().unwrap_or_else(|e| e.into_inner()).extend(delays);
    }

    /// Each queue with its dead-letter and delay queues.
    fn queue_names(&self) -> Vec<String> {
        let delays = self.retry_delays.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut names = Vec::new();
        for queue in &self.queues {
            names.push(queue.clone());
            names.push(names::dlq(queue));
            names.extend(delays.iter().map(|delay| names::retry_queue(queue, *delay)));
        }
        names
    }

    /// Deletes the objects, unless that was done already.
    async fn delete(&self, probe: &BrokerProbe) {
        if !self.deleted.swap(true, Ordering::SeqCst) {
            delete_objects(probe, &self.queue_names(), &self.exchange).await;
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.deleted.load(Ordering::SeqCst) {
            return;
        }
        let (amqp_url, names, exchange) = (self.amqp_url.clone(), self.queue_names(), self.exchange.clone());
        let deleted = teardown::run_bounded(format!("delete-{exchange}"), CLEANUP_TIMEOUT, move || async move {
            delete_objects(&BrokerProbe::connect(&amqp_url).await, &names, &exchange).await;
        });
        if let Err(error) = deleted {
            eprintln!("test kit: could not delete the queues and exchange {}: {error}", self.exchange);
        }
    }
}

/// Deletes the queues and the exchange, whatever they hold; missing ones are fine.
async fn delete_objects(probe: &BrokerProbe, queues: &[String], exchange: &str) {
    probe.delete_queues(&queues.iter().map(String::as_str).collect::<Vec<_>>()).await;
    probe.delete_exchange(exchange).await;
}
