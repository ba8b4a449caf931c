//! Unique names, so tests that share one RabbitMQ and one Postgres never see each other's
//! queues, exchanges, routing keys or rows.

/// Returns `prefix_` followed by 12 random lowercase hex digits (48 random bits).
///
/// The result contains only the prefix's characters, `_` and `[0-9a-f]`, so with an ASCII
/// prefix of letters, digits, `_`, `-` or `.` it is a valid queue name, exchange name and
/// routing-key word. Two calls collide with probability about 2^-48.
pub fn unique(prefix: &str) -> String {
    let bits = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("{prefix}_{bits:012x}")
}

/// The dead-letter queue a consumer of `queue` parks failed messages in: `<queue>.dlq`.
///
/// The same convention as `shared::topology::dlq_name` (the kit cannot depend on `shared`;
/// `tests/tests/kit_infra.rs` checks that the two agree).
pub fn dlq(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The delay queue that holds a message of `queue` for `delay` before a retry:
/// `<queue>.retry.<milliseconds>ms`, as `shared::topology::retry_queue_name` names it.
pub fn retry_queue(queue: &str, delay: std::time::Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}
