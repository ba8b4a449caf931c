//! Why a command could not do its work at all (as opposed to an [`Outcome`](crate::outcome::Outcome)
//! that reports a failed call or a drift).

use std::{io::Write as _, process::ExitCode};

use serde_json::json;
use shared::connection::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum MqError {
    /// An argument that is not what it should be (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// No broker node accepted a connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The queue does not exist.
    #[error("no queue {0}")]
    NoQueue(String),
    /// The broker failed an operation.
    #[error("{action} failed: {source}")]
    Broker {
        action: String,
        #[source]
        source: lapin::Error,
    },
    /// The management API could not be asked.
    #[error("the management API at {url} failed: {reason}")]
    Management { url: String, reason: String },
}

impl MqError {
    pub fn broker(action: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        let action = action.into();
        move |source| Self::Broker { action, source }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::Connect(_) => "unavailable",
            Self::NoQueue(_) => "no-queue",
            Self::Broker { .. } => "broker",
            Self::Management { .. } => "management",
        }
    }

    /// Prints the error (one JSON object on stdout with `--json`, else a line on stderr) and
    /// returns the exit code: 2 for a usage error, 1 otherwise.
    pub fn print(&self, json: bool) -> ExitCode {
        let _ = if json {
            let error = json!({"ok": false, "error": {"kind": self.kind(), "message": self.to_string()}});
            writeln!(std::io::stdout(), "{error}")
        } else {
            writeln!(std::io::stderr(), "error: {self}")
        };
        ExitCode::from(if matches!(self, Self::Usage(_)) { 2 } else { 1 })
    }
}
