//! Two notification-service processes (the built binary, twice: `--scale
//! notification-service=2`) on one queue and one database, each event published twice: every
//! user gets exactly one mail, counted once both processes have settled every delivery, and
//! both processes settled a share of the deliveries.

use std::collections::BTreeSet;

use shared::CancellationToken;
use tests::{DEADLINE, ServiceEnv, smtp::SmtpSink};

use crate::{
    binary,
    support::{event_id, user},
};

const USERS: usize = 12;

/// Patient retries: a copy meeting its twin's send in the other process is retried until that
/// send is recorded (`in_progress`), which must not exhaust its attempts on a slow machine.
const RETRIES: [(&str, &str); 4] = [
    ("RETRY_MAX_ATTEMPTS", "20"),
    ("RETRY_INITIAL_DELAY_MS", "200"),
    ("RETRY_MULTIPLIER", "2"),
    ("RETRY_MAX_DELAY_MS", "800"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_competing_for_each_event_published_twice_mail_each_user_once() {
    let env = RETRIES.iter().fold(ServiceEnv::new().await, |env, (name, value)| env.set(name, *value));
    let sink = SmtpSink::start().await;
    let extra = [("PREFETCH", "4"), ("SHUTDOWN_GRACE_MS", "5000")];
    let smtp_url = sink.url();
    let (first, second) = tokio::join!(binary::start(&env, &smtp_url, &extra), binary::start(&env, &smtp_url, &extra));
    let shutdown = CancellationToken::new();
    let client = binary::publisher(&env, &shutdown).await;

    let events: Vec<_> =
        (0..USERS).map(|n| (user(&format!("User {n}"), &format!("process{n}@example.com")), event_id())).collect();
    // Back to back, so that the two copies of an event are often handled at the same time by
    // the two processes.
    for (event, id) in &events {
        binary::emit(&client, event, id).await;
        binary::emit(&client, event, id).await;
    }

    // The barrier: both processes together settled (acked) every delivery, so a late
    // duplicate would be among the mails counted below.
    let queue = env.notification_queue().to_owned();
    let settled = tests::eventually(DEADLINE, || async {
        let counts = [binary::handled(&first, &queue, "ok").await, binary::handled(&second, &queue, "ok").await];
        if counts.iter().sum::<u64>() >= 2 * USERS as u64 { Ok(counts) } else { Err(counts) }
    })
    .await;
    assert!(settled.iter().all(|count| *count > 0), "one process took every delivery: {settled:?}");

    let mails = sink.mails();
    let recipients: BTreeSet<&str> = mails.iter().map(|mail| mail.rcpt_to[0].as_str()).collect();
    assert_eq!(recipients.len(), USERS, "every user got a mail");
    assert_eq!(mails.len(), USERS, "and only one: {recipients:?}");
    let pool = env.db().pool().await;
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sent_mails WHERE state = 'sent'").fetch_one(&pool).await.unwrap();
    assert_eq!(sent, USERS as i64, "each mail recorded as sent");

    for binary in [first, second] {
        binary.process.signal("TERM").await.unwrap();
        let status = binary.process.wait_exit(DEADLINE).await;
        assert!(status.is_some_and(|status| status.success()), "{status:?}");
    }
    shutdown.cancel();
    client.closed().await;
    pool.close().await;
    env.finish().await;
}
