//! The command line: every command, argument and variable, as `mq --help` shows them.

use std::time::Duration;

use clap::{Parser, Subcommand};
use shared::config::BrokerSettings;

/// The queues of the services from the command line: NestJS-compatible requests and events,
/// dead-letter queues (list, show, replay, purge) and a check of the broker's topology.
#[derive(Debug, Parser)]
#[command(
    name = "mq",
    version,
    about = "A command for the services' queues: NestJS-compatible send/emit, dead-letter queues (list, show, replay, purge), a topology check, the AsyncAPI document",
    long_about = None,
    after_help = "The broker is AMQP_URL (the services' variable; --amqp-url before the command). Exit codes: 0 done, \
                  1 the call failed or a check found drift, 2 usage error. `mq <command> --help` for each command."
)]
pub struct Cli {
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Print one JSON object instead of text, for scripts
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a request as a NestJS client.send does and print the reply (exit 1 on an error reply, no handler or timeout)
    Send {
        /// The pattern: JSON ('{"cmd":"get_user"}') or a plain string
        pattern: String,
        /// The data, as JSON ('{"id":"…"}'; a string is '"text"')
        data: String,
        /// The queue the request goes to
        #[arg(long, env = "USER_QUEUE", default_value = "user_queue")]
        queue: String,
        /// How long to wait for the reply: 500ms, 5s, 1m (plain numbers are seconds)
        #[arg(long, default_value = "5s", value_parser = duration)]
        timeout: Duration,
    },
    /// Emit an event as a NestJS client.emit does (persistent, publisher-confirmed)
    Emit {
        /// The pattern, also the routing key on an exchange (user.created)
        pattern: String,
        /// The data, as JSON
        data: String,
        /// The topic exchange to publish to [default: EVENTS_EXCHANGE, events]
        #[arg(long, conflicts_with = "queue")]
        exchange: Option<String>,
        /// Publish straight to this queue instead (through the default exchange; an error if it does not exist)
        #[arg(long)]
        queue: Option<String>,
        /// The AMQP message_id, the event id consumers deduplicate by [default: a new UUID]
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Inspect, replay or purge a dead-letter queue
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Compare the broker with what the services declare
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Print the AsyncAPI 3.0 document of the services' messaging (YAML; JSON with --json)
    Asyncapi,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the parked messages, then list each: pattern, failure, attempts, service, parked at, size, error
    List {
        /// The dead-letter queue (notification_queue.dlq), or the queue whose dead-letter queue it is
        queue: String,
        /// List at most this many (the count is always the whole queue's)
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show the N-th parked message (1 = oldest) in full: properties, headers, body
    Show {
        /// The dead-letter queue, or the queue whose dead-letter queue it is
        queue: String,
        /// Its position, 1 = the oldest
        n: usize,
    },
    /// Publish parked messages again to where they were first published, attempts reset, with
    /// an x-replayed-at header; each parked copy is removed only after the broker confirmed its
    /// replay
    Replay {
        /// The dead-letter queue, or the queue whose dead-letter queue it is
        queue: String,
        /// Replay at most this many
        #[arg(long)]
        limit: Option<usize>,
        /// Replay only messages with this pattern (others stay parked, in their order)
        #[arg(long)]
        pattern: Option<String>,
        /// Publish to the parked message's own queue (through the default exchange) instead of
        /// its original exchange, so that no other queue bound there gets it again
        #[arg(long)]
        to_queue: bool,
    },
    /// Delete every parked message (asks for --yes)
    Purge {
        /// The dead-letter queue, or the queue whose dead-letter queue it is
        queue: String,
        /// Really delete them
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Compare queues (existence, arguments, consumers), the events exchange and, through the
    /// management API, bindings with what the services declare; exit 1 on drift.
    /// Queue names and the retry schedule follow USER_QUEUE, USER_EVENTS_QUEUE,
    /// NOTIFICATION_QUEUE, EVENTS_EXCHANGE, AMQP_QUEUE_TYPE, DLQ_MAX_* and RETRY_* as the services read them
    /// (RETRY_* set here apply to every service; unset, each service's default schedule).
    Check {
        /// The RabbitMQ management API (http://user:pass@host:15672), to check bindings; without
        /// it bindings are reported as not checked (AMQP cannot list them)
        #[arg(long, env = "RABBITMQ_MANAGEMENT_URL", value_name = "URL")]
        management_url: Option<String>,
    },
}

/// `500ms`, `5s`, `2m`, or a number of seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 500ms, 5s or 1m"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        other => return Err(format!("unknown unit {other:?} (ms, s or m)")),
    };
    if duration.is_zero() { Err("the duration must be positive".to_owned()) } else { Ok(duration) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("0s").is_err() && duration("5h").is_err() && duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
