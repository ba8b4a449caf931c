//! An SMTP sink for tests of anything that sends mail: a real SMTP server
//! (`tests/nest/smtp-sink.js`, built on the `smtp-server` npm package) on 127.0.0.1 that records
//! every message, can be told to answer 4xx/5xx, and can be stopped and restarted on the same
//! port to simulate an outage.
//!
//! It needs node like the NestJS drivers: gate each test with
//! `if !tests::smtp::node_ready() { return; }`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, MimeHeaders as _};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::nest::{StderrLog, node_command};

pub use crate::nest::node_ready;

/// How long the sink may take to bind, and to acknowledge a command.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const COMMAND_DEADLINE: Duration = Duration::from_secs(10);

/// How the sink answers senders, set with [`SmtpSink::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpMode {
    /// Accept every message (the default).
    #[default]
    Accept,
    /// Refuse recipients with `451 4.3.0 try again later` (a transient failure).
    TempFail,
    /// Refuse recipients with `550 5.1.1 mailbox unavailable` (a permanent failure).
    PermFail,
}

impl SmtpMode {
    fn command(self) -> &'static str {
        match self {
            SmtpMode::Accept => "mode accept",
            SmtpMode::TempFail => "mode tempfail",
            SmtpMode::PermFail => "mode permfail",
        }
    }
}

/// One message the sink accepted: the SMTP envelope and the full RFC 5322 text, with helpers
/// that decode it (MIME, RFC 2047 encoded words, transfer encodings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub rcpt_to: Vec<String>,
    /// The message as received after `DATA` (headers and body).
    pub raw: String,
}

impl ReceivedMail {
    /// The first header `name` (case-insensitive), unfolded and with encoded words decoded;
    /// address headers come back as text, e.g. `Ada <ada@example.com>`.
    pub fn header(&self, name: &str) -> Option<String> {
        let header_name = HeaderName::parse(name.to_owned())?;
        // Read just this header as unstructured text, whatever its usual type.
        let message = MessageParser::new().header_text(header_name.clone()).parse_headers(self.raw.as_bytes())?;
        match message.header(header_name)? {
            HeaderValue::Text(text) => Some(unfold(text)),
            HeaderValue::TextList(list) => Some(unfold(&list.join(", "))),
            _ => None,
        }
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The `Message-ID` without its angle brackets.
    pub fn message_id(&self) -> Option<String> {
        self.parsed()?.message_id().map(str::to_owned)
    }

    /// The first `text/plain` body part, decoded (`None` if the message has none: an HTML
    /// part is not converted).
    pub fn text_body(&self) -> Option<String> {
        let message = self.parsed()?;
        message
            .text_bodies()
            .find(|part| part.is_text() && !part.is_text_html())
            .and_then(|part| part.text_contents().map(str::to_owned))
    }

    /// The first `text/html` body part, decoded (`None` if the message has none: a text part
    /// is not converted).
    pub fn html_body(&self) -> Option<String> {
        let message = self.parsed()?;
        message.html_bodies().find(|part| part.is_text_html()).and_then(|part| part.text_contents().map(str::to_owned))
    }

    /// Attachment file names, in order (parts with a `filename`/`name` that are not bodies).
    pub fn attachment_names(&self) -> Vec<String> {
        self.parsed()
            .map(|message| message.attachments().filter_map(|part| part.attachment_name().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn parsed(&self) -> Option<Message<'_>> {
        MessageParser::new().with_mime_headers().with_message_ids().parse(self.raw.as_bytes())
    }
}

/// Unfolds a header value: each line break with the whitespace around it becomes one space.
fn unfold(value: &str) -> String {
    value.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}

/// State shared with the stdout reader tasks; survives restarts.
#[derive(Default)]
struct Collected {
    mails: Mutex<Vec<ReceivedMail>>,
    count: watch::Sender<usize>,
}

impl Collected {
    fn push(&self, mail: ReceivedMail) {
        let mut mails = self.mails.lock().unwrap_or_else(|e| e.into_inner());
        mails.push(mail);
        let len = mails.len();
        drop(mails);
        self.count.send_replace(len);
    }

    fn snapshot(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One running `smtp-sink.js` process.
struct SinkProcess {
    child: Child,
    stdin: ChildStdin,
    acks: mpsc::UnboundedReceiver<String>,
    reader: JoinHandle<()>,
    stderr: StderrLog,
}

/// A local SMTP server that records what it receives (see the module docs). Plain SMTP on
/// 127.0.0.1, AUTH optional. Killed on drop.
pub struct SmtpSink {
    port: u16,
    mode: SmtpMode,
    collected: Arc<Collected>,
    process: Option<SinkProcess>,
}

impl SmtpSink {
    /// Starts the sink on an ephemeral port, accepting everything.
    pub async fn start() -> SmtpSink {
        let collected = Arc::new(Collected::default());
        let (process, port) = spawn_sink(0, &collected).await;
        SmtpSink { port, mode: SmtpMode::Accept, collected, process: Some(process) }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The port the sink listens on (kept across [`SmtpSink::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how the sink answers from the next SMTP command on; returns once the sink has
    /// acknowledged. The mode also applies after a restart.
    pub async fn set_mode(&mut self, mode: SmtpMode) {
        let process = self.process.as_mut().expect("set_mode on a stopped SmtpSink");
        send_command(process, mode.command()).await;
        self.mode = mode;
    }

    /// Every message received so far (across restarts), oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.collected.snapshot()
    }

    /// Waits until at least `n` messages were received in total and returns them all; panics
    /// if that does not happen within `deadline`.
    pub async fn wait_for_mails(&self, n: usize, deadline: Duration) -> Vec<ReceivedMail> {
        let mut count = self.collected.count.subscribe();
        if timeout(deadline, count.wait_for(|received| *received >= n)).await.is_err() {
            let stderr = self.process.as_ref().map(|p| p.stderr.tail()).unwrap_or_default();
            panic!(
                "SMTP sink received {} of {n} expected mails within {deadline:?}; its stderr:\n{stderr}",
                self.collected.snapshot().len()
            );
        }
        self.collected.snapshot()
    }

    /// Kills the sink: its port refuses connections until [`SmtpSink::restart`]. Messages
    /// already accepted stay in [`SmtpSink::mails`].
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.child.start_kill();
            let _ = process.child.wait().await;
            // The reader drains what the sink printed before dying, then sees end of file.
            let _ = timeout(COMMAND_DEADLINE, process.reader).await;
        }
    }

    /// Starts the sink again on the same port (stopping it first if needed), in the mode last
    /// set, keeping the messages collected so far.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (mut process, port) = spawn_sink(self.port, &self.collected).await;
        assert_eq!(port, self.port, "SMTP sink restarted on another port");
        if self.mode != SmtpMode::Accept {
            send_command(&mut process, self.mode.command()).await;
        }
        self.process = Some(process);
    }
}

/// Starts `smtp-sink.js` on `port` (0 = ephemeral) and waits for `LISTENING <port>`.
async fn spawn_sink(port: u16, collected: &Arc<Collected>) -> (SinkProcess, u16) {
    let mut child = node_command("smtp-sink.js")
        .stdin(Stdio::piped())
        .env("PORT", port.to_string())
        .spawn()
        .expect("spawn `node smtp-sink.js`");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (stderr, stderr_task) = StderrLog::collect(child.stderr.take().expect("piped stderr"));

    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let bound = loop {
        match timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    break port.trim().parse::<u16>().expect("port in LISTENING line");
                }
            }
            Ok(_) => {
                let status = child.wait().await;
                let _ = timeout(Duration::from_secs(5), stderr_task).await;
                panic!("smtp-sink.js (port {port}) exited before listening ({status:?}):\n{}", stderr.tail());
            }
            Err(_) => {
                panic!("smtp-sink.js (port {port}) not listening within {STARTUP_DEADLINE:?}:\n{}", stderr.tail())
            }
        }
    };

    let (acks_tx, acks) = mpsc::unbounded_channel();
    let collected = Arc::clone(collected);
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with('{') {
                match serde_json::from_str::<ReceivedMail>(&line) {
                    Ok(mail) => collected.push(mail),
                    Err(err) => tracing::warn!(%err, "smtp-sink.js printed an unreadable mail line"),
                }
            } else if line.starts_with("OK ") || line.starts_with("ERR ") {
                let _ = acks_tx.send(line);
            }
        }
    });

    (SinkProcess { child, stdin, acks, reader, stderr }, bound)
}

/// Sends one stdin command and waits for its `OK <command>` answer.
async fn send_command(process: &mut SinkProcess, command: &str) {
    process.stdin.write_all(format!("{command}\n").as_bytes()).await.expect("write to smtp-sink.js stdin");
    process.stdin.flush().await.expect("flush smtp-sink.js stdin");
    let expected = format!("OK {command}");
    match timeout(COMMAND_DEADLINE, process.acks.recv()).await {
        Ok(Some(answer)) if answer == expected => {}
        Ok(Some(answer)) => panic!("smtp-sink.js answered {answer:?} to {command:?}"),
        Ok(None) => panic!("smtp-sink.js exited on {command:?}:\n{}", process.stderr.tail()),
        Err(_) => panic!("smtp-sink.js did not acknowledge {command:?} within {COMMAND_DEADLINE:?}"),
    }
}
