//! Welcome-mail throughput: a backlog of `user.created` events drained by the real service
//! (consume, claim in Postgres, send, record sent, ack) at prefetch 1, 16 and 64, against the raw
//! SMTP send rate of the same pooled lettre transport with as many concurrent senders, both
//! against the kit's SMTP sink and measured in the same run.
//!
//! `cargo bench -p notification-service --bench mail` (RabbitMQ and Postgres as for the tests;
//! the sink runs in-process; `BENCH_MAILS` sets the mails per measurement, default 1000).
//! Prints a markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use lettre::message::Mailbox;
use notification_service::{App, Config, Mailer, recipient::Recipient, welcome_message};
use shared::CancellationToken;
use tests::{BrokerProbe, DEADLINE, ServiceEnv, smtp::SmtpSink};
use uuid::Uuid;

const PREFETCHES: [u16; 3] = [1, 16, 64];
const DEFAULT_MAILS: usize = 1000;
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a Tokio runtime");
    runtime.block_on(run());
}

struct Row {
    concurrency: u16,
    raw: f64,
    service: f64,
}

async fn run() {
    let mails = std::env::var("BENCH_MAILS").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_MAILS);
    let sink = SmtpSink::start().await;
    let mut rows = Vec::new();
    for concurrency in PREFETCHES {
        let raw = raw_rate(&sink, concurrency, mails).await;
        let service = service_rate(&sink, concurrency, mails).await;
        eprintln!("concurrency {concurrency}: raw {raw:.0}/s, service {service:.0}/s");
        rows.push(Row { concurrency, raw, service });
    }
    println!("\n{mails} mails per measurement; mails accepted by the SMTP sink per second\n");
    println!(
        "| prefetch = SMTP senders | raw lettre send (mails/s) | service: events → mails (mails/s) | service / raw |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for row in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} % |",
            row.concurrency,
            row.raw,
            row.service,
            100.0 * row.service / row.raw
        );
    }
}

/// The baseline: `senders` tasks sending `mails` welcome mails through one pooled transport.
async fn raw_rate(sink: &SmtpSink, senders: u16, mails: usize) -> f64 {
    let mailer = Mailer::new(&sink.url(), SMTP_TIMEOUT, u32::from(senders)).expect("a transport to the sink");
    let from: Mailbox = "Welcome <welcome@example.com>".parse().unwrap();
    let recipient = Recipient::parse("Ada", "ada@example.com").unwrap();
    let received = sink.mails().len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (mailer, from, recipient, next) = (mailer.clone(), from.clone(), recipient.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < mails {
                    let message_id = format!("{}@bench", Uuid::new_v4());
                    let message = welcome_message::render(&from, &recipient, &message_id).unwrap();
                    mailer.send(message).await.expect("the sink accepts");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    sink.wait_for_mails(received + mails, DRAIN_DEADLINE).await;
    let rate = mails as f64 / started.elapsed().as_secs_f64();
    mailer.shutdown().await;
    rate
}

/// The service draining a backlog of `mails` events (one user each) at `prefetch`, in a test
/// kit environment of its own (fresh database, queue and exchange names, cleanup).
async fn service_rate(sink: &SmtpSink, prefetch: u16, mails: usize) -> f64 {
    let env = ServiceEnv::new().await.set("SMTP_URL", sink.url()).set("PREFETCH", prefetch.to_string());
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    let queue = env.notification_queue().to_owned();
    probe.declare_queue(&queue).await;
    for _ in 0..mails {
        let id = Uuid::new_v4();
        let body = serde_json::json!({
            "pattern": "user.created",
            "data": {"id": id, "email": "ada@example.com", "name": "Ada", "createdAt": "2024-01-01T00:07:00.000Z"},
        });
        let properties = BasicProperties::default().with_message_id(id.to_string().into()).with_delivery_mode(2);
        assert!(probe.publish_raw("", &queue, body.to_string().as_bytes(), properties).await);
    }

    let config = Config::from_lookup(|name| env.lookup(name)).unwrap();
    let shutdown = CancellationToken::new();
    let received = sink.mails().len();
    let app = App::build(config, shutdown.clone()).await.expect("the service starts");
    // The clock starts with the database migrated; the consumer starts inside the measurement.
    let started = Instant::now();
    sink.wait_for_mails(received + mails, DRAIN_DEADLINE).await;
    let rate = mails as f64 / started.elapsed().as_secs_f64();

    // The last records commit just after their mails were accepted.
    let expected = i64::try_from(mails).unwrap();
    tests::eventually(DEADLINE, || async {
        let recorded: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM sent_mails WHERE state = 'sent'"#)
            .fetch_one(app.pool())
            .await
            .map_err(|error| error.to_string())?;
        if recorded == expected { Ok(()) } else { Err(format!("{recorded} of {expected} recorded")) }
    })
    .await;
    shutdown.cancel();
    app.run_until_stopped().await;
    env.finish().await;
    rate
}
