//! One SMTP conversation on one connection: the part of RFC 5321 that mail clients such as
//! lettre use (EHLO/HELO, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT), answered the way the
//! sink's current [`SmtpMode`] says. Commands are handled in order, so pipelined clients work.

use std::{io, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

use super::{ReceivedMail, SmtpMode, State};

/// The longest line read, command or message. RFC 5321 allows 1000 octets; more is tolerated
/// (this is a test server), but a bound keeps a runaway client from filling memory.
const MAX_LINE: u64 = 64 * 1024;
/// The largest message accepted, advertised with `SIZE`; a larger one is refused with `552`.
pub(super) const MAX_MESSAGE: usize = 25 * 1024 * 1024;
/// The name the server gives itself in the greeting and the EHLO reply.
const SERVER_NAME: &str = "test-kit.smtp-sink";

/// What the session does after a command.
enum Flow {
    Continue,
    Close,
}

/// The envelope of the mail transaction under way (after `MAIL`).
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
}

/// Runs the conversation on `stream` until the client quits or disconnects, or the sink
/// closes it (a [`SmtpMode::DropAfterData`], or the task being aborted on stop).
pub(super) async fn converse(stream: TcpStream, state: Arc<State>) -> io::Result<()> {
    let mut session = Session { connection: BufReader::new(stream), line: Vec::new() };
    session.reply(&format!("220 {SERVER_NAME} ESMTP ready")).await?;
    let mut greeted = false;
    let mut transaction: Option<Transaction> = None;
    while session.read_line().await? {
        let command = String::from_utf8_lossy(&session.line).trim_end_matches(['\r', '\n']).to_owned();
        let (verb, argument) = command.split_once(' ').unwrap_or((&command, ""));
        let argument = argument.trim();
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                greeted = true;
                transaction = None;
                let ehlo = format!(
                    "250-{SERVER_NAME} greets {argument}\r\n250-8BITMIME\r\n250-PIPELINING\r\n\
                     250-ENHANCEDSTATUSCODES\r\n250-SIZE {MAX_MESSAGE}\r\n250 AUTH PLAIN LOGIN"
                );
                session.reply(&ehlo).await?;
            }
            "HELO" => {
                greeted = true;
                transaction = None;
                session.reply(&format!("250 {SERVER_NAME}")).await?;
            }
            "AUTH" => session.authenticate(argument).await?,
            "MAIL" if !greeted => session.reply("503 5.5.1 EHLO or HELO first").await?,
            "MAIL" => match path_argument(argument, "FROM:") {
                Some(mail_from) => {
                    transaction = Some(Transaction { mail_from, rcpt_to: Vec::new() });
                    session.reply("250 2.1.0 OK").await?;
                }
                None => session.reply("501 5.5.4 syntax: MAIL FROM:<address>").await?,
            },
            "RCPT" => {
                let reply = match (transaction.as_mut(), path_argument(argument, "TO:")) {
                    (None, _) => "503 5.5.1 MAIL first",
                    (Some(_), None) => "501 5.5.4 syntax: RCPT TO:<address>",
                    (Some(_), Some(to)) if to.is_empty() => "501 5.5.4 syntax: RCPT TO:<address>",
                    (Some(transaction), Some(to)) => match state.settings().mode {
                        SmtpMode::TempFail => TEMP_FAIL,
                        SmtpMode::PermFail => PERM_FAIL,
                        SmtpMode::Accept | SmtpMode::DropAfterData => {
                            transaction.rcpt_to.push(to);
                            "250 2.1.5 OK"
                        }
                    },
                };
                session.reply(reply).await?;
            }
            "DATA" => match transaction.take() {
                Some(envelope) if !envelope.rcpt_to.is_empty() => {
                    if let Flow::Close = session.receive_data(envelope, &state).await? {
                        return Ok(());
                    }
                }
                unfinished => {
                    transaction = unfinished;
                    session.reply("503 5.5.1 RCPT first").await?;
                }
            },
            "RSET" => {
                transaction = None;
                session.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => session.reply("250 2.0.0 OK").await?,
            "VRFY" => session.reply("252 2.5.2 cannot verify, will accept").await?,
            "QUIT" => {
                session.reply("221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => session.reply("502 5.5.2 command not implemented").await?,
        }
    }
    Ok(())
}

/// The answer of [`SmtpMode::TempFail`] to `RCPT` (and to the end of `DATA`).
const TEMP_FAIL: &str = "451 4.3.0 try again later";
/// The answer of [`SmtpMode::PermFail`] to `RCPT` (and to the end of `DATA`).
const PERM_FAIL: &str = "550 5.1.1 mailbox unavailable";

/// The connection and the line last read from it.
struct Session {
    connection: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Session {
    /// Reads the next line (with its line break) into `self.line`; false at end of stream.
    async fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        let read = (&mut self.connection).take(MAX_LINE).read_until(b'\n', &mut self.line).await?;
        if read == 0 {
            return Ok(false);
        }
        if !self.line.ends_with(b"\n") {
            let why = if read as u64 >= MAX_LINE { "line too long" } else { "connection closed mid-line" };
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Ok(true)
    }

    /// Sends one reply (its lines joined by CRLF already when it has several).
    async fn reply(&mut self, reply: &str) -> io::Result<()> {
        self.connection.write_all(format!("{reply}\r\n").as_bytes()).await
    }

    /// After `DATA`: reads the message up to the lone `.`, undoes the dot-stuffing, then
    /// answers (or does not) as the sink's settings say at that moment. A message is recorded
    /// before its `250` is sent, so a client that saw the `250` finds it in the sink.
    async fn receive_data(&mut self, envelope: Transaction, state: &State) -> io::Result<Flow> {
        self.reply("354 end data with <CR><LF>.<CR><LF>").await?;
        let mut body = Vec::new();
        let mut too_big = false;
        loop {
            if !self.read_line().await? {
                // Cut in the middle of the message: nothing was delivered.
                return Ok(Flow::Close);
            }
            if self.line == b".\r\n" || self.line == b".\n" {
                break;
            }
            let line = self.line.strip_prefix(b".").unwrap_or(&self.line);
            too_big |= body.len() + line.len() > MAX_MESSAGE;
            if !too_big {
                body.extend_from_slice(line);
            }
        }
        if too_big {
            self.reply("552 5.3.4 message too big").await?;
            return Ok(Flow::Continue);
        }
        let mail = ReceivedMail {
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            raw: String::from_utf8_lossy(&body).into_owned(),
        };
        let settings = state.settings();
        match settings.mode {
            SmtpMode::TempFail => self.reply(TEMP_FAIL).await?,
            SmtpMode::PermFail => self.reply(PERM_FAIL).await?,
            SmtpMode::DropAfterData => {
                state.record(mail);
                return Ok(Flow::Close);
            }
            SmtpMode::Accept => {
                state.record(mail);
                if !settings.accept_delay.is_zero() {
                    // The slow server being simulated, not a wait for something to happen.
                    tokio::time::sleep(settings.accept_delay).await;
                }
                self.reply("250 2.0.0 OK: queued").await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// `AUTH PLAIN` and `AUTH LOGIN`, with or without an initial response: any credentials
    /// are accepted (the sink only has to satisfy clients configured with a user).
    async fn authenticate(&mut self, argument: &str) -> io::Result<()> {
        let mut words = argument.split_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let prompts: &[&str] = match (mechanism.as_str(), words.next()) {
            ("PLAIN", Some(_)) => &[],
            ("PLAIN", None) => &["334 "],
            // "Password:" and "Username:", base64-encoded.
            ("LOGIN", Some(_)) => &["334 UGFzc3dvcmQ6"],
            ("LOGIN", None) => &["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"],
            _ => return self.reply("504 5.5.4 unrecognised authentication mechanism").await,
        };
        for prompt in prompts {
            self.reply(prompt).await?;
            if !self.read_line().await? {
                return Ok(());
            }
            if self.line.starts_with(b"*") {
                return self.reply("501 5.7.0 authentication cancelled").await;
            }
        }
        self.reply("235 2.7.0 authentication successful").await
    }
}

/// The address of `FROM:<address> [parameters]` (or `TO:`), without the angle brackets;
/// `None` when the keyword is missing. The null path `<>` gives an empty address.
fn path_argument(argument: &str, keyword: &str) -> Option<String> {
    let (head, rest) = argument.split_at_checked(keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest.trim_start();
    match rest.strip_prefix('<') {
        Some(bracketed) => bracketed.split_once('>').map(|(address, _parameters)| address.to_owned()),
        None => rest.split_whitespace().next().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::path_argument;

    #[test]
    fn paths_are_read_with_or_without_brackets_and_parameters() {
        assert_eq!(path_argument("FROM:<ada@example.com> BODY=8BITMIME", "FROM:").as_deref(), Some("ada@example.com"));
        assert_eq!(path_argument("from: <ada@example.com>", "FROM:").as_deref(), Some("ada@example.com"));
        assert_eq!(path_argument("TO:bob@example.com", "TO:").as_deref(), Some("bob@example.com"));
        assert_eq!(path_argument("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_argument("FROM:<unclosed", "FROM:"), None);
        assert_eq!(path_argument("TO:<ada@example.com>", "FROM:"), None);
        assert_eq!(path_argument("", "FROM:"), None);
    }
}
