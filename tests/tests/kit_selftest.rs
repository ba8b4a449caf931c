//! Self-test of the test kit's peers: the NestJS interop drivers (`tests::nest`, which need
//! Node.js 20+ and install `tests/nest` themselves) against a live RabbitMQ, and the in-process
//! SMTP sink (`tests::smtp`) driven by hand-written SMTP conversations and by lettre.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, transport::smtp::authentication::Credentials,
};
use serde_json::json;
use tests::nest::{EmitTarget, NestServer, nest_emit, nest_send, nest_send_many};
use tests::smtp::{SmtpMode, SmtpSink};
use tests::{DEADLINE, unique};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const KNOWN_USER: &str = "4fb7e234-2daa-5fed-bdf6-93f8f482da80";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Deletes the durable queues and exchanges a test declared, so reruns leave no litter.
async fn delete_broker_objects(queues: &[&str], exchanges: &[&str]) {
    let connection = Connection::connect(&tests::amqp_url().await, ConnectionProperties::default())
        .await
        .expect("connect for cleanup");
    let channel = connection.create_channel().await.expect("cleanup channel");
    for queue in queues {
        channel.queue_delete((*queue).into(), QueueDeleteOptions::default()).await.expect("delete queue");
    }
    for exchange in exchanges {
        channel.exchange_delete((*exchange).into(), ExchangeDeleteOptions::default()).await.expect("delete exchange");
    }
    let _ = connection.close(200, "cleanup done".into()).await;
}

#[tokio::test]
async fn nest_server_answers_a_nest_client() {
    let url = tests::amqp_url().await;
    let queue = unique("kit");
    let mut server = NestServer::start(&url, &queue, None).await;

    let sum = nest_send(&url, &queue, json!({"cmd": "sum"}), json!([1, 2, 3.5]), CALL_TIMEOUT).await;
    assert_eq!(sum, Ok(json!(6.5)));

    let found = nest_send(&url, &queue, json!({"cmd": "get_user"}), json!({"id": KNOWN_USER}), CALL_TIMEOUT).await;
    assert_eq!(
        found,
        Ok(json!({
            "id": KNOWN_USER,
            "email": "nest@example.com",
            "name": "Nest",
            "createdAt": "2024-01-01T00:07:00.000Z"
        }))
    );

    let missing = nest_send(
        &url,
        &queue,
        json!({"cmd": "get_user"}),
        json!({"id": "00000000-0000-0000-0000-000000000000"}),
        CALL_TIMEOUT,
    )
    .await;
    assert_eq!(missing, Err(json!({"status": 404, "message": "user not found"})));

    let boom = nest_send(&url, &queue, json!({"cmd": "boom"}), json!({}), CALL_TIMEOUT).await;
    assert_eq!(boom, Err(json!({"status": "error", "message": "Internal server error"})));

    // A string pattern that parses as JSON routes like the object.
    let as_string = nest_send(&url, &queue, json!("{\"cmd\":\"sum\"}"), json!([2, 2]), CALL_TIMEOUT).await;
    assert_eq!(as_string, Ok(json!(4)));

    let unknown = nest_send(&url, &queue, json!({"cmd": "nope"}), json!({}), CALL_TIMEOUT).await;
    assert_eq!(unknown, Err(json!("There is no matching message handler defined in the remote service.")));

    let many = nest_send_many(&url, &queue, json!({"cmd": "sum"}), json!([20, 22]), CALL_TIMEOUT, 5).await;
    assert_eq!(many, vec![Ok(json!(42)); 5]);

    let user =
        json!({"id": KNOWN_USER, "email": "ada@example.com", "name": "Ada", "createdAt": "2024-01-01T00:07:00.000Z"});
    nest_emit(&url, EmitTarget::Queue(&queue), "user.created", user.clone()).await;
    assert_eq!(server.next_event(DEADLINE).await, json!({"event": "user.created", "data": user}));

    drop(server);
    delete_broker_objects(&[&queue], &[]).await;
}

#[tokio::test]
async fn nest_server_receives_events_through_a_topic_exchange() {
    let url = tests::amqp_url().await;
    let queue = unique("kit");
    let exchange = unique("kit_events");
    let mut server = NestServer::start(&url, &queue, Some(&exchange)).await;

    nest_emit(&url, EmitTarget::Exchange(&exchange), "user.created", json!({"n": 1})).await;
    assert_eq!(server.next_event(DEADLINE).await, json!({"event": "user.created", "data": {"n": 1}}));

    // Requests still arrive through the queue itself.
    let sum = nest_send(&url, &queue, json!({"cmd": "sum"}), json!([1, 1]), CALL_TIMEOUT).await;
    assert_eq!(sum, Ok(json!(2)));

    drop(server);
    delete_broker_objects(&[&queue], &[&exchange]).await;
}

#[tokio::test]
async fn nest_send_without_a_consumer_times_out() {
    let url = tests::amqp_url().await;
    let queue = unique("kit_idle");
    let reply = nest_send(&url, &queue, json!({"cmd": "sum"}), json!([1]), Duration::from_millis(300)).await;
    assert_eq!(reply, Err(json!({"timeout": true})));
    delete_broker_objects(&[&queue], &[]).await;
}

/// A minimal SMTP client conversation, enough to exercise the sink byte by byte.
struct Smtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Smtp {
    async fn connect(port: u16) -> std::io::Result<Smtp> {
        let (read, writer) = TcpStream::connect(("127.0.0.1", port)).await?.into_split();
        let mut smtp = Smtp { reader: BufReader::new(read), writer };
        let greeting = smtp.reply().await;
        assert!(greeting.starts_with("220"), "greeting: {greeting}");
        Ok(smtp)
    }

    /// Reads one (possibly multi-line) reply and returns its last line.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).await.expect("read SMTP reply");
            assert!(read > 0, "SMTP server closed the connection");
            // `250-...` continues, `250 ...` ends the reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Writes `bytes` as they are (several pipelined commands, or part of a message).
    async fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).await.expect("write to the SMTP server");
    }

    /// True when the server closed the connection (end of stream, or reset) without another
    /// reply.
    async fn closed_by_server(&mut self) -> bool {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest).await {
            Ok(0) | Err(_) => true,
            Ok(_) => panic!("the server answered {rest:?} instead of closing"),
        }
    }

    /// Runs EHLO/MAIL/RCPT; returns the RCPT reply.
    async fn envelope(&mut self, from: &str, to: &str) -> String {
        let ehlo = self.command("EHLO kit.test").await;
        assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await;
        assert!(mail.starts_with("250"), "MAIL: {mail}");
        self.command(&format!("RCPT TO:<{to}>")).await
    }

    /// Sends DATA with `message` (CRLF lines, dot-stuffed by the caller); returns the reply.
    async fn data(&mut self, message: &str) -> String {
        let go = self.command("DATA").await;
        assert!(go.starts_with("354"), "DATA: {go}");
        self.writer.write_all(message.as_bytes()).await.expect("write message");
        self.command(".").await
    }
}

const MULTIPART_MAIL: &str = "From: Kit <kit@example.com>\r\n\
To: Ada <ada@example.com>\r\n\
Subject: =?UTF-8?B?V2lsbGtvbW1lbiwgQWRh?=\r\n =?UTF-8?Q?_=E2=9C=93?=\r\n\
Message-ID: <welcome-1@kit.test>\r\n\
X-Folded: first part\r\n\tsecond part\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=C3=BC=C3=9Fe, Ada!\r\n\
..leading dot\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Hello, Ada!</p>\r\n\
--b1--\r\n";

#[tokio::test]
async fn smtp_sink_records_fails_and_restarts() {
    let mut sink = SmtpSink::start().await;
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));

    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    let rcpt = smtp.envelope("bounce@kit.test", "ada@example.com").await;
    assert!(rcpt.starts_with("250"), "RCPT: {rcpt}");
    let done = smtp.data(MULTIPART_MAIL).await;
    assert!(done.starts_with("250"), "end of DATA: {done}");
    smtp.command("QUIT").await;

    let mails = sink.wait_for_mails(1, DEADLINE).await;
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "bounce@kit.test");
    assert_eq!(mail.rcpt_to, vec!["ada@example.com".to_owned()]);
    assert_eq!(mail.subject().as_deref(), Some("Willkommen, Ada ✓"));
    assert_eq!(mail.header("x-folded").as_deref(), Some("first part second part"));
    assert_eq!(mail.header("To").as_deref(), Some("Ada <ada@example.com>"));
    assert_eq!(mail.header("X-Absent"), None);
    assert_eq!(mail.message_id().as_deref(), Some("welcome-1@kit.test"));
    assert_eq!(mail.text_body().as_deref().map(str::trim_end), Some("Grüße, Ada!\r\n.leading dot"));
    assert_eq!(mail.html_body().as_deref().map(str::trim_end), Some("<p>Hello, Ada!</p>"));

    // A text-only message has no HTML body (no conversion).
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    smtp.envelope("bounce@kit.test", "bob@example.com").await;
    smtp.data("Subject: plain\r\n\r\njust text\r\n").await;
    let mails = sink.wait_for_mails(2, DEADLINE).await;
    assert_eq!(mails[1].html_body(), None);
    assert_eq!(mails[1].text_body().as_deref().map(str::trim_end), Some("just text"));

    sink.set_mode(SmtpMode::PermFail).await;
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    let rcpt = smtp.envelope("bounce@kit.test", "ada@example.com").await;
    assert_eq!(rcpt, "550 5.1.1 mailbox unavailable");

    sink.set_mode(SmtpMode::TempFail).await;
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    let rcpt = smtp.envelope("bounce@kit.test", "ada@example.com").await;
    assert_eq!(rcpt, "451 4.3.0 try again later");
    drop(smtp);

    let port = sink.port();
    sink.stop().await;
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "stopped sink still accepts connections");

    sink.restart().await;
    assert_eq!(sink.port(), port);
    // The mode survives the restart.
    let mut smtp = Smtp::connect(port).await.expect("connect to restarted sink");
    let rcpt = smtp.envelope("bounce@kit.test", "ada@example.com").await;
    assert_eq!(rcpt, "451 4.3.0 try again later");

    sink.set_mode(SmtpMode::Accept).await;
    let mut smtp = Smtp::connect(port).await.expect("connect to restarted sink");
    let rcpt = smtp.envelope("bounce@kit.test", "carol@example.com").await;
    assert!(rcpt.starts_with("250"), "RCPT after restart: {rcpt}");
    smtp.data("Subject: again\r\n\r\nback\r\n").await;
    let mails = sink.wait_for_mails(3, DEADLINE).await;
    assert_eq!(mails.len(), 3, "mails from before the restart are kept");
    assert_eq!(mails[2].subject().as_deref(), Some("again"));
    assert_eq!(mails[2].rcpt_to, vec!["carol@example.com".to_owned()]);
}

#[tokio::test]
async fn smtp_sink_follows_the_protocol_rules_lettre_relies_on() {
    let sink = SmtpSink::start().await;
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    assert!(smtp.command("MAIL FROM:<a@kit.test>").await.starts_with("503"), "MAIL before HELO");
    assert!(smtp.command("HELO kit.test").await.starts_with("250"));
    assert!(smtp.command("RCPT TO:<b@kit.test>").await.starts_with("503"), "RCPT before MAIL");
    assert!(smtp.command("MAIL FROM:<a@kit.test>").await.starts_with("250"));
    assert!(smtp.command("DATA").await.starts_with("503"), "DATA before RCPT");
    assert!(smtp.command("RSET").await.starts_with("250"));
    assert!(smtp.command("RCPT TO:<b@kit.test>").await.starts_with("503"), "RSET ends the transaction");
    assert!(smtp.command("NOOP").await.starts_with("250"));
    assert!(smtp.command("STARTTLS").await.starts_with("502"));
    assert!(smtp.command("MAIL TO:<b@kit.test>").await.starts_with("501"));

    // Pipelined: three commands in one write, three replies in order.
    smtp.send("MAIL FROM:<>\r\nRCPT TO:<b@kit.test> NOTIFY=NEVER\r\nDATA\r\n").await;
    assert!(smtp.reply().await.starts_with("250"));
    assert!(smtp.reply().await.starts_with("250"));
    assert!(smtp.reply().await.starts_with("354"));
    // Dot-stuffed lines lose their first dot; a dot inside a line stays.
    smtp.send("Subject: dots\r\n\r\n..hidden\r\n...two\r\nend.\r\n").await;
    assert!(smtp.command(".").await.starts_with("250"));
    assert_eq!(smtp.command("QUIT").await, "221 2.0.0 bye");
    assert!(smtp.closed_by_server().await);

    let mails = sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails[0].mail_from, "", "the null sender");
    assert_eq!(mails[0].rcpt_to, vec!["b@kit.test".to_owned()]);
    assert_eq!(mails[0].raw, "Subject: dots\r\n\r\n.hidden\r\n..two\r\nend.\r\n");
}

#[tokio::test]
async fn smtp_sink_in_drop_after_data_records_the_mail_and_closes_without_answering() {
    let mut sink = SmtpSink::start().await;
    sink.set_mode(SmtpMode::DropAfterData).await;
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    assert!(smtp.envelope("a@kit.test", "b@kit.test").await.starts_with("250"));
    assert!(smtp.command("DATA").await.starts_with("354"));
    smtp.send("Subject: cut\r\n\r\nbody\r\n.\r\n").await;
    assert!(smtp.closed_by_server().await, "no reply after the message");
    let mails = sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails[0].subject().as_deref(), Some("cut"));
}

#[tokio::test]
async fn smtp_sink_with_an_accept_delay_records_the_mail_before_its_late_250() {
    let mut sink = SmtpSink::start().await;
    let delay = Duration::from_millis(500);
    sink.set_accept_delay(delay);
    let mut smtp = Smtp::connect(sink.port()).await.expect("connect to sink");
    smtp.envelope("a@kit.test", "b@kit.test").await;
    assert!(smtp.command("DATA").await.starts_with("354"));
    smtp.send("Subject: slow\r\n\r\nbody\r\n.\r\n").await;
    let sent = std::time::Instant::now();
    sink.wait_for_mails(1, DEADLINE).await;
    let reply = smtp.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(sent.elapsed() >= delay, "the 250 came after {:?}, before the {delay:?} delay", sent.elapsed());

    sink.set_accept_delay(Duration::ZERO);
    smtp.envelope("a@kit.test", "c@kit.test").await;
    assert!(smtp.data("Subject: quick\r\n\r\nbody\r\n").await.starts_with("250"));
}

#[tokio::test]
async fn stopping_the_smtp_sink_closes_open_connections_and_the_port() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port();
    let mut idle = Smtp::connect(port).await.expect("connect to sink");
    let mut mid_data = Smtp::connect(port).await.expect("connect to sink");
    mid_data.envelope("a@kit.test", "b@kit.test").await;
    assert!(mid_data.command("DATA").await.starts_with("354"));
    mid_data.send("Subject: never finished\r\n").await;

    sink.stop().await;
    assert!(idle.closed_by_server().await);
    assert!(mid_data.closed_by_server().await);
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the port still accepts");
    assert!(sink.mails().is_empty(), "an unfinished message is not delivered");
    sink.stop().await; // stopping twice is harmless

    sink.restart().await;
    let mut smtp = Smtp::connect(port).await.expect("connect to the restarted sink");
    assert!(smtp.command("NOOP").await.starts_with("250"));
}

fn welcome(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("Kit <kit@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .message_id(Some(format!("<{subject}@kit.test>")))
        .body(format!("Hello from {subject}"))
        .unwrap()
}

#[tokio::test]
async fn lettre_sends_through_the_sink_with_pooling_auth_and_every_failure_mode() {
    let mut sink = SmtpSink::start().await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .credentials(Credentials::new("kit".to_owned(), "secret".to_owned()))
        .timeout(Some(Duration::from_secs(5)))
        .build();

    // Several mails on the pool's connection(s), lettre resetting between them.
    for n in 0..3 {
        transport.send(welcome("Ada <ada@example.com>", &format!("pooled-{n}"))).await.expect("accepted");
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 3, "every mail is recorded by the time its send returns");
    assert_eq!(mails[2].subject().as_deref(), Some("pooled-2"));
    assert_eq!(mails[2].message_id().as_deref(), Some("pooled-2@kit.test"));
    assert_eq!(mails[2].mail_from, "kit@example.com");
    assert_eq!(mails[2].text_body().as_deref().map(str::trim_end), Some("Hello from pooled-2"));

    sink.set_mode(SmtpMode::TempFail).await;
    let error = transport.send(welcome("ada@example.com", "temp")).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    sink.set_mode(SmtpMode::PermFail).await;
    let error = transport.send(welcome("ada@example.com", "perm")).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    sink.set_mode(SmtpMode::DropAfterData).await;
    assert!(transport.send(welcome("ada@example.com", "dropped")).await.is_err());
    assert_eq!(sink.wait_for_mails(4, DEADLINE).await[3].subject().as_deref(), Some("dropped"));

    // A server slower than the client's patience (lettre's own timeout bounds only the
    // connect, so the caller bounds the send): the client gives up, the server has the mail.
    sink.set_mode(SmtpMode::Accept).await;
    sink.set_accept_delay(Duration::from_secs(2));
    let slow = tokio::time::timeout(Duration::from_millis(300), transport.send(welcome("ada@example.com", "slow")));
    assert!(slow.await.is_err(), "the send returned before the delayed 250");
    assert_eq!(sink.wait_for_mails(5, DEADLINE).await[4].subject().as_deref(), Some("slow"));

    // After an outage the pool connects again.
    sink.set_accept_delay(Duration::ZERO);
    sink.stop().await;
    assert!(transport.send(welcome("ada@example.com", "down")).await.is_err());
    sink.restart().await;
    transport.send(welcome("ada@example.com", "back")).await.expect("accepted after the restart");
    assert_eq!(sink.mails().last().and_then(|mail| mail.subject()).as_deref(), Some("back"));
}
