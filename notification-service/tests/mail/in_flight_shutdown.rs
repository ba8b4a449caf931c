//! The built binary stopped (SIGTERM) while a mail is in flight: the SMTP server holds its
//! answer to the end of `DATA`; the send finishes within `SHUTDOWN_GRACE_MS`, is recorded and
//! acked, and the process exits 0. Exactly one mail, nothing left in the queue for the next
//! instance.

use std::time::{Duration, Instant};

use shared::CancellationToken;
use tests::{BrokerProbe, DEADLINE, ServiceEnv, smtp::SmtpSink};

use crate::{
    binary,
    support::{event_id, user},
};

/// How long the SMTP server holds the `250` after it has the whole message: the mail is in
/// flight when the signal comes, and stays so for this long.
const HELD_REPLY: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_mail_in_flight_finish_then_exits_0_with_one_mail_and_the_event_acked() {
    let env = ServiceEnv::new().await;
    let mut sink = SmtpSink::start().await;
    sink.set_accept_delay(HELD_REPLY);
    let binary = binary::start(&env, &sink.url(), &[("SHUTDOWN_GRACE_MS", "10000")]).await;
    let shutdown = CancellationToken::new();
    let client = binary::publisher(&env, &shutdown).await;

    let ada = user("Ada", "ada@example.com");
    let id = event_id();
    binary::emit(&client, &ada, &id).await;
    // The server has the whole message and holds its answer: the send is in flight.
    sink.wait_for_mails(1, DEADLINE).await;
    let signalled = Instant::now();
    binary.process.signal("TERM").await.unwrap();
    let log = binary.process.log().to_owned();
    let status = binary.process.wait_exit(DEADLINE).await;
    let status = status.unwrap_or_else(|| panic!("no exit within {DEADLINE:?}:\n{}", tests::process::log_tail(&log)));
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "SIGTERM with a mail in flight ended it with {status}:\n{}",
        tests::process::log_tail(&log)
    );
    assert!(took < Duration::from_secs(10), "exit {took:?} after SIGTERM, past SHUTDOWN_GRACE_MS");

    // Acked: the process is gone, so an unacked event would be back in the queue by now.
    let probe = BrokerProbe::connect(env.amqp_url()).await;
    probe.assert_empty(env.notification_queue()).await;
    let pool = env.db().pool().await;
    let state: String = sqlx::query_scalar("SELECT state FROM sent_mails WHERE event_id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|error| panic!("no claim for the event ({error}):\n{}", tests::process::log_tail(&log)));
    assert_eq!(state, "sent", "the accepted mail was recorded before the exit");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].rcpt_to, vec!["ada@example.com".to_owned()]);

    shutdown.cancel();
    client.closed().await;
    pool.close().await;
    env.finish().await;
}
