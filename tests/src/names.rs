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
