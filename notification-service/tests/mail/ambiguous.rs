//! Claims found `sending`: another instance's running attempt is waited for; an attempt that
//! did not finish is the one ambiguous case, resent with the same Message-ID (or parked, as
//! `AMBIGUOUS_SEND=park` asks).

use shared::contracts::UserCreated;
use sqlx::PgPool;
use tests::{DEADLINE, smtp::SmtpSink};
use uuid::Uuid;

use crate::support::{TestApp, event_id, user, welcome_mails};

/// Writes a `sending` claim for `event` as another instance would, started `age_secs` ago.
async fn foreign_claim(pool: &PgPool, event_id: &str, event: &UserCreated, message_id: &str, age_secs: f64) {
    sqlx::query!(
        "INSERT INTO sent_mails (event_id, user_id, recipient, message_id, state, attempt, owner, claimed_at, started_at)
         VALUES ($1, $2, $3, $4, 'sending', 1, $5,
                 now() - make_interval(secs => $6), now() - make_interval(secs => $6))",
        event_id,
        event.id,
        event.email,
        message_id,
        Uuid::new_v4(),
        age_secs,
    )
    .execute(pool)
    .await
    .unwrap();
}

struct Row {
    state: String,
    attempt: i32,
    owner: Option<Uuid>,
    ambiguous: bool,
}

async fn row(pool: &PgPool, event_id: &str) -> Row {
    sqlx::query_as!(Row, "SELECT state, attempt, owner, ambiguous FROM sent_mails WHERE event_id = $1", event_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_abandoned_claim_is_resent_once_with_its_message_id() {
    let mut t = TestApp::spawn().await;
    let (ada, id) = (user("Ada", "ada@example.com"), event_id());
    // An instance that died an hour ago, mid-send, under another MESSAGE_ID_DOMAIN.
    let first_message_id = format!("{id}@earlier.example");
    foreign_claim(&t.pool, &id, &ada, &first_message_id, 3600.0).await;
    let resends_before = welcome_mails("ambiguous_resend");

    t.emit(&ada, &id).await;

    t.wait_handled("ok", 1).await;
    let mails = t.settled_mails().await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].message_id(), Some(first_message_id), "the same Message-ID as the attempt it may repeat");
    assert!(welcome_mails("ambiguous_resend") > resends_before, "counted as ambiguous_resend");
    let resent = row(&t.pool, &id).await;
    assert_eq!((resent.state.as_str(), resent.attempt, resent.ambiguous), ("sent", 2, true));
    assert_eq!(resent.owner, Some(t.app.instance_id()));

    t.emit(&ada, &id).await;
    t.wait_handled("ok", 2).await;
    assert_eq!(t.settled_mails().await.len(), 1, "resent once, not once per delivery");
    t.stop().await;
}

#[tokio::test]
async fn with_ambiguous_send_park_an_abandoned_claim_is_parked_with_the_reason() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let mut t = TestApp::spawn_with(sink, &url, &[("AMBIGUOUS_SEND", "park")]).await;
    let (ada, id) = (user("Ada", "ada@example.com"), event_id());
    foreign_claim(&t.pool, &id, &ada, &format!("{id}@notification-service"), 3600.0).await;
    let parked_before = welcome_mails("ambiguous_parked");

    t.emit(&ada, &id).await;

    let parked = t.probe.wait_for_message(&t.dlq, DEADLINE).await;
    assert_eq!(parked.header("x-failure").and_then(|v| v.as_str()), Some("permanent"));
    let reason = parked.header("x-error").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    assert!(reason.contains("may have been accepted") && reason.contains("AMBIGUOUS_SEND=park"), "{reason}");
    assert_eq!(parked.message_id.as_deref(), Some(id.as_str()));
    assert!(welcome_mails("ambiguous_parked") > parked_before);
    assert!(t.settled_mails().await.is_empty(), "nothing resent");
    let left = row(&t.pool, &id).await;
    assert_eq!((left.state.as_str(), left.attempt), ("sending", 1), "the claim is left for the operator");
    t.stop().await;
}

#[tokio::test]
async fn a_running_claim_of_another_instance_is_waited_for_then_skipped_or_sent() {
    let mut t = TestApp::spawn().await;

    // Another instance is sending Ada's mail right now; it then records it as sent.
    let (ada, ada_event) = (user("Ada", "ada@example.com"), event_id());
    foreign_claim(&t.pool, &ada_event, &ada, &format!("{ada_event}@notification-service"), 0.0).await;
    t.emit(&ada, &ada_event).await;
    t.wait_handled("retried", 2).await;
    assert!(t.sink.mails().is_empty(), "not sent while the other attempt runs");
    sqlx::query!("UPDATE sent_mails SET state = 'sent', sent_at = now() WHERE event_id = $1", ada_event)
        .execute(&t.pool)
        .await
        .unwrap();
    t.wait_handled("ok", 1).await;
    assert!(t.settled_mails().await.is_empty(), "the other instance sent it");

    // Another instance is sending Grace's mail; its send fails and it releases the claim.
    let (grace, grace_event) = (user("Grace", "grace@example.com"), event_id());
    foreign_claim(&t.pool, &grace_event, &grace, &format!("{grace_event}@notification-service"), 0.0).await;
    let retried = t.handled("retried");
    t.emit(&grace, &grace_event).await;
    t.wait_handled("retried", retried + 2).await;
    assert!(t.sink.mails().is_empty());
    sqlx::query!("DELETE FROM sent_mails WHERE event_id = $1", grace_event).execute(&t.pool).await.unwrap();

    t.wait_handled("ok", 2).await;
    let mails = t.sink.wait_for_mails(1, DEADLINE).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_to, ["grace@example.com"]);
    t.stop().await;
}
