//! What a command prints and how it exits.

use std::{io::Write as _, process::ExitCode};

use serde_json::Value;

/// A command's result: the JSON object printed with `--json`, the text printed otherwise,
/// and whether it succeeded (exit code 0) or failed or found something wrong (exit code 1).
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: Value,
    pub text: String,
}

impl Outcome {
    pub fn ok(json: Value, text: impl Into<String>) -> Self {
        Self { ok: true, json, text: text.into() }
    }

    pub fn failed(json: Value, text: impl Into<String>) -> Self {
        Self { ok: false, json, text: text.into() }
    }

    /// Prints the outcome (text on stdout when it succeeded, on stderr when not) and returns
    /// the exit code.
    pub fn print(&self, json: bool) -> ExitCode {
        // A closed pipe (`mq … | head`) is not an error of the command.
        let _ = if json {
            writeln!(std::io::stdout(), "{}", self.json)
        } else if self.ok {
            write!(std::io::stdout(), "{}", with_newline(&self.text))
        } else {
            write!(std::io::stderr(), "{}", with_newline(&self.text))
        };
        if self.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') { text.to_owned() } else { format!("{text}\n") }
}
