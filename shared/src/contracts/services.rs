//! Who sends, emits and consumes which contract, and the queues each service declares, as
//! its default configuration has it: the catalog the AsyncAPI document
//! ([`crate::asyncapi`]) and `mq topology check` are built from.
//!
//! The services build their topology from their own `Config` (queue names, retry schedule);
//! this catalog restates those defaults. `mq`'s tests compare it with each service's
//! `Config` defaults and with what the running services put on the broker, so a service that
//! changes a queue, a binding or its retry schedule without this file fails a test.

use std::time::Duration;

use lapin::types::FieldTable;

use super::{Event, GetUser, Request, UserCreated};
use crate::{
    retry::RetryPolicy,
    topology::{self, DlqLimits, QueueType},
};

/// The default name of the topic exchange events go to (`EVENTS_EXCHANGE`).
pub const EVENTS_EXCHANGE: &str = "events";

/// A queue a service consumes (and declares durable, with no arguments, plus its dead-letter
/// and delay queues).
#[derive(Debug, Clone, Copy)]
pub struct ConsumedQueue {
    /// The environment variable that renames it.
    pub var: &'static str,
    /// Its name by default.
    pub name: &'static str,
    /// The request patterns answered on it.
    pub requests: &'static [&'static str],
    /// The event patterns it is bound to the events exchange for (one binding each).
    pub events: &'static [&'static str],
    /// One line on what it is for.
    pub about: &'static str,
}

/// A service: what it consumes, sends and emits, and its default retry schedule.
#[derive(Debug, Clone)]
pub struct ServiceContract {
    pub name: &'static str,
    pub about: &'static str,
    pub consumes: &'static [ConsumedQueue],
    /// Requests it sends, each with the variable naming the queue it sends to and that
    /// queue's default name (the client also declares that queue, as a NestJS client asserts it).
    pub sends: &'static [(&'static str, &'static str, &'static str)],
    /// Events it emits to the events exchange (the client declares the exchange).
    pub emits: &'static [&'static str],
    /// Its default `RETRY_*` schedule: one delay queue per distinct delay.
    pub retry: RetryPolicy,
}

const fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_secs(1),
        multiplier: 5,
        max_delay: Duration::from_secs(60),
    }
}

/// The three services.
pub const SERVICES: &[ServiceContract] = &[
    ServiceContract {
        name: "auth-service",
        about: "Signs users up and in; publishes user.created through its outbox and asks user-service for profiles",
        consumes: &[],
        sends: &[(<GetUser as Request>::PATTERN, "USER_QUEUE", "user_queue")],
        emits: &[<UserCreated as Event>::PATTERN],
        retry: policy(5),
    },
    ServiceContract {
        name: "user-service",
        about: "Answers get_user from its projection of user.created",
        consumes: &[
            ConsumedQueue {
                var: "USER_QUEUE",
                name: "user_queue",
                requests: &[<GetUser as Request>::PATTERN],
                events: &[],
                about: "The get_user RPC queue (durable, no arguments, as NestJS clients assert it)",
            },
            ConsumedQueue {
                var: "USER_EVENTS_QUEUE",
                name: "user_events_queue",
                requests: &[],
                events: &[<UserCreated as Event>::PATTERN],
                about: "The user projection's queue, bound to the events exchange",
            },
        ],
        sends: &[],
        emits: &[],
        retry: policy(5),
    },
    ServiceContract {
        name: "notification-service",
        about: "Sends one welcome mail per user.created",
        consumes: &[ConsumedQueue {
            var: "NOTIFICATION_QUEUE",
            name: "notification_queue",
            requests: &[],
            events: &[<UserCreated as Event>::PATTERN],
            about: "The welcome mail's queue, bound to the events exchange",
        }],
        sends: &[],
        emits: &[],
        retry: policy(8),
    },
];

/// One queue on the broker as the services declare it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredQueue {
    pub name: String,
    pub durable: bool,
    pub arguments: FieldTable,
    /// Whether a service consumes it (a dead-letter or delay queue has no consumer by design).
    pub consumed: bool,
    /// What kind of queue it is.
    pub role: QueueRole,
    /// The service that declares it (the consumer's, for a queue another service also asserts).
    pub service: &'static str,
}

/// Why a queue exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// A queue a service consumes.
    Main,
    /// `<queue>.retry.<ms>ms`: holds a failed message for its delay, then returns it.
    Delay(Duration),
    /// `<queue>.dlq`: parked messages.
    DeadLetter,
}

/// One binding of a queue to the events exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredBinding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

/// Everything the services declare on the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTopology {
    /// The events exchange (a durable topic exchange).
    pub exchange: String,
    pub queues: Vec<DeclaredQueue>,
    pub bindings: Vec<DeclaredBinding>,
}

impl DeclaredTopology {
    /// The topology of the default configuration, on a classic virtual host.
    pub fn defaults() -> Self {
        Self::of(|_| None, QueueType::Classic, None, DlqLimits::default())
    }

    /// The topology with the names `lookup` gives (by variable, e.g. `USER_QUEUE`), the queue
    /// type, the dead-letter queues' bounds and, if given, one retry schedule for every service.
    pub fn of(
        lookup: impl Fn(&str) -> Option<String>,
        queue_type: QueueType,
        retry: Option<&RetryPolicy>,
        dlq: DlqLimits,
    ) -> Self {
        let name = |var: &str, default: &str| lookup(var).unwrap_or_else(|| default.to_owned());
        let exchange = name("EVENTS_EXCHANGE", EVENTS_EXCHANGE);
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for service in SERVICES {
            let delays = retry.unwrap_or(&service.retry).delays();
            for consumed in service.consumes {
                let queue = name(consumed.var, consumed.name);
                let declared = |name: String, arguments, consumed, role| DeclaredQueue {
                    name,
                    durable: true,
                    arguments,
                    consumed,
                    role,
                    service: service.name,
                };
                queues.push(declared(queue.clone(), FieldTable::default(), true, QueueRole::Main));
                queues.push(declared(
                    topology::dlq_name(&queue),
                    topology::bounded_dlq_arguments(queue_type, dlq),
                    false,
                    QueueRole::DeadLetter,
                ));
                for delay in &delays {
                    let arguments = topology::retry_arguments(&queue, *delay, queue_type);
                    let role = QueueRole::Delay(*delay);
                    queues.push(declared(topology::retry_queue_name(&queue, *delay), arguments, false, role));
                }
                bindings.extend(consumed.events.iter().map(|pattern| DeclaredBinding {
                    exchange: exchange.clone(),
                    queue: queue.clone(),
                    routing_key: (*pattern).to_owned(),
                }));
            }
        }
        Self { exchange, queues, bindings }
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<&DeclaredQueue> {
        self.queues.iter().find(|queue| queue.name == name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_consumed_queue_has_its_dead_letter_and_delay_queues() {
        let topology = DeclaredTopology::defaults();
        for main in ["user_queue", "user_events_queue", "notification_queue"] {
            assert_eq!(topology.queue(main).unwrap().role, QueueRole::Main);
            assert_eq!(topology.queue(&format!("{main}.dlq")).unwrap().role, QueueRole::DeadLetter);
            for ms in [1000, 5000, 25000, 60000] {
                let delay = topology.queue(&format!("{main}.retry.{ms}ms")).unwrap();
                assert_eq!(delay.role, QueueRole::Delay(Duration::from_millis(ms)));
                assert!(!delay.consumed);
            }
        }
        assert_eq!(topology.queues.len(), 3 * 6);
        let bound: Vec<&str> = topology.bindings.iter().map(|binding| binding.queue.as_str()).collect();
        assert_eq!(bound, ["user_events_queue", "notification_queue"]);
    }

    #[test]
    fn names_and_schedules_follow_the_deployment() {
        let lookup = |var: &str| (var == "NOTIFICATION_QUEUE").then(|| "mails".to_owned());
        let retry = RetryPolicy { max_attempts: 2, ..RetryPolicy::default() };
        let topology = DeclaredTopology::of(lookup, QueueType::Quorum, Some(&retry), DlqLimits::default());
        assert!(topology.queue("mails.retry.1000ms").is_some());
        assert!(topology.queue("mails.retry.5000ms").is_none());
        let dlq = topology.queue("mails.dlq").unwrap();
        assert!(dlq.arguments.inner().contains_key("x-queue-type"));
    }
}
