//! `mq`: a command for the queues of the services (mq/README.md).
//!
//! `send` and `emit` speak NestJS 11's `Transport.RMQ` through shared's client; `dlq`
//! inspects, replays and purges dead-letter queues; `topology check` compares what the services
//! declare with what the broker has; `asyncapi` prints the AsyncAPI document. Every command
//! reads the broker from `AMQP_URL` like the services, prints text or, with `--json`, one JSON
//! object, and exits 0 on success, 1 when the operation failed or found something wrong, 2 on
//! a usage error.

mod check;
mod cli;
mod dlq;
mod error;
mod messaging;
mod outcome;

use std::process::ExitCode;

use clap::Parser as _;

use crate::{
    cli::{Cli, Command, DlqCommand, TopologyCommand},
    error::MqError,
    outcome::Outcome,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(outcome) => outcome.print(json),
        Err(error) => error.print(json),
    }
}

async fn run(cli: Cli) -> Result<Outcome, MqError> {
    let broker = &cli.broker;
    match cli.command {
        Command::Send { pattern, data, queue, timeout } => {
            messaging::send(broker, &pattern, &data, queue, timeout).await
        }
        Command::Emit { pattern, data, exchange, queue, message_id } => {
            messaging::emit(broker, &pattern, &data, exchange, queue, message_id).await
        }
        Command::Dlq(DlqCommand::List { queue, limit }) => dlq::list(broker, &queue, limit).await,
        Command::Dlq(DlqCommand::Show { queue, n }) => dlq::show(broker, &queue, n).await,
        Command::Dlq(DlqCommand::Replay { queue, limit, pattern, to_queue }) => {
            dlq::replay(broker, &queue, limit, pattern.as_deref(), to_queue).await
        }
        Command::Dlq(DlqCommand::Purge { queue, yes }) => dlq::purge(broker, &queue, yes).await,
        Command::Topology(TopologyCommand::Check { management_url }) => {
            check::run(broker, management_url.as_deref()).await
        }
        Command::Asyncapi => Ok(Outcome::ok(shared::asyncapi::document(), shared::asyncapi::yaml())),
    }
}
