//! The event failure policy: retry with exponential backoff through delay queues, then park.
//!
//! A failed event is republished (persistent, publisher-confirmed) into
//! `<queue>.retry.<delay>ms`, whose TTL dead-letters it back into `<queue>` later; the main
//! queue keeps serving meanwhile (no head-of-line blocking) and keeps no arguments. After
//! [`RetryPolicy::max_attempts`], or at once for a permanent failure or an undecodable
//! message, it is republished into `<queue>.dlq` with the reason in its headers. Only after
//! the broker confirmed the republish is the original acked: a crash in between means a
//! redelivery, never a loss.
//!
//! A republish the broker refuses (a full, bounded DLQ: `x-overflow: reject-publish`) or that
//! fails returns the original to its queue only after a pause ([`FailureQueues::pause`]:
//! 100 ms doubling per consecutive failure on the queue, at most 10 s, jittered), so a DLQ
//! that stays full slows the failing messages down instead of spinning on them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Confirmation,
    message::Delivery,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};

use crate::{connection::Backoff, topology};

/// Header: which delivery attempt a message is on (1 = first).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Set by quorum queues: how often the broker delivered this copy before (a consumer or its
/// node was lost holding it). Not an attempt: `x-attempt` counts handler failures only, and a
/// republished copy (retry, park) starts without the old copy's count.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// DLQ header: why the message was parked (the error and its causes).
pub const ERROR_HEADER: &str = "x-error";
/// DLQ header: the kind of failure (`exhausted`, `permanent`, `undecodable`, `no-handler`,
/// `too-large`).
pub const FAILURE_HEADER: &str = "x-failure";
/// DLQ header: how many attempts were made.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// DLQ header: the service that parked it.
pub const SERVICE_HEADER: &str = "x-service";
/// Headers: where the message was first published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// DLQ header: when it was parked (RFC 3339).
pub const PARKED_AT_HEADER: &str = "x-parked-at";

/// How often and how late a failing event is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first delivery included; 1 parks on the first failure.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: u32,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 1 s, 5 s, 25 s, 125 s→capped at 60 s between them.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 5,
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Every distinct delay the policy uses: one delay queue each.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..self.max_attempts).map(|attempt| self.delay_after(attempt)).collect();
        delays.dedup();
        delays
    }
}

/// Why a message is being parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// A transient failure that outlived every retry.
    Exhausted,
    /// A failure retrying cannot fix.
    Permanent,
    /// Not a NestJS packet (not JSON, no pattern).
    Undecodable,
    /// A message nobody here handles (an event is parked; a request is also answered).
    NoHandler,
    /// A body larger than the consumer's `max_message_bytes`: parked unread (a waiting caller
    /// is answered).
    TooLarge,
}

impl ParkReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::Permanent => "permanent",
            Self::Undecodable => "undecodable",
            Self::NoHandler => "no-handler",
            Self::TooLarge => "too-large",
        }
    }
}

/// A republish the broker did not confirm: the original stays unacked and comes back.
#[derive(Debug, thiserror::Error)]
pub enum RepublishError {
    #[error("republishing failed")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the republished message")]
    Refused,
}

/// Why, and after how many attempts, a message is parked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parking<'a> {
    pub reason: ParkReason,
    /// The error and its causes, for the `x-error` header.
    pub error: &'a str,
    pub attempts: u32,
}

/// Where one consumed queue's failed messages go: its delay queues and its dead-letter queue,
/// reached through a channel in publisher-confirm mode (a republish counts only once
/// confirmed). Built once per queue and connection, so handling a failure takes no settings.
#[derive(Clone)]
pub(crate) struct FailureQueues {
    confirms: Channel,
    queue: Arc<str>,
    /// Names the service in the `x-service` header.
    service: Arc<str>,
    policy: RetryPolicy,
    /// Republishes of this queue that failed in a row (reset by a confirmed one): the backoff.
    failed_in_a_row: Arc<AtomicU32>,
}

/// The pause before a message whose republish failed goes back to its queue.
const REPUBLISH_BACKOFF: Backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10) };

impl FailureQueues {
    pub(crate) fn new(confirms: Channel, queue: Arc<str>, service: Arc<str>, policy: RetryPolicy) -> Self {
        Self { confirms, queue, service, policy, failed_in_a_row: Arc::new(AtomicU32::new(0)) }
    }

    /// How long to hold a message whose retry or parking just failed before returning it to
    /// its queue: grows with every failure in a row on this queue.
    pub(crate) fn pause(&self) -> Duration {
        REPUBLISH_BACKOFF.delay(self.failed_in_a_row.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether a transient failure on `attempt` is tried again rather than parked.
    pub(crate) fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.policy.max_attempts
    }

    /// Sends a failed message to wait in the delay queue for `attempt`'s backoff; returns
    /// the delay.
    pub(crate) async fn retry(&self, delivery: &Delivery, attempt: u32) -> Result<Duration, RepublishError> {
        let delay = self.policy.delay_after(attempt);
        let mut headers = carried_headers(delivery);
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt.saturating_add(1)));
        self.republish(&topology::retry_queue_name(&self.queue, delay), delivery, headers).await?;
        Ok(delay)
    }

    /// Parks a message in `<queue>.dlq` with the reason, attempt count and service in headers.
    pub(crate) async fn park(&self, delivery: &Delivery, parking: Parking<'_>) -> Result<(), RepublishError> {
        let mut headers = carried_headers(delivery);
        headers.insert(FAILURE_HEADER.into(), AMQPValue::LongString(parking.reason.as_str().into()));
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(parking.error.into()));
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(parking.attempts));
        headers.insert(SERVICE_HEADER.into(), AMQPValue::LongString(self.service.as_ref().into()));
        let parked_at = crate::wire::js_date::format(&chrono::Utc::now());
        headers.insert(PARKED_AT_HEADER.into(), AMQPValue::LongString(parked_at.into()));
        self.republish(&topology::dlq_name(&self.queue), delivery, headers).await
    }

    /// Publishes a copy of the message, persistent and mandatory, and waits for the confirm.
    async fn republish(&self, queue: &str, delivery: &Delivery, headers: FieldTable) -> Result<(), RepublishError> {
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirmation =
            self.confirms.basic_publish("".into(), queue.into(), options, &delivery.data, properties).await?.await?;
        match confirmation {
            Confirmation::Ack(None) => {
                self.failed_in_a_row.store(0, Ordering::Relaxed);
                Ok(())
            }
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(RepublishError::Refused)
            }
        }
    }
}

/// The message's headers plus where it was first published, kept across retries.
fn carried_headers(delivery: &Delivery) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    if headers.contains_key(DELIVERY_COUNT_HEADER) {
        let mut table = headers.inner().clone();
        table.remove(DELIVERY_COUNT_HEADER);
        headers = table.into();
    }
    if !headers.inner().contains_key(ORIGINAL_ROUTING_KEY_HEADER) {
        headers.insert(ORIGINAL_EXCHANGE_HEADER.into(), AMQPValue::LongString(delivery.exchange.as_str().into()));
        headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), AMQPValue::LongString(delivery.routing_key.as_str().into()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_and_cap() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_millis(100),
            multiplier: 2,
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<u128> = policy.delays().iter().map(Duration::as_millis).collect();
        assert_eq!(delays, [100, 200, 400, 500]);
    }
}
