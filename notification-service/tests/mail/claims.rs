//! The claim that makes attempts at one event's mail mutually exclusive, at the database
//! level: each `SentMails` below is one service process (its own instance id).

use std::time::Duration;

use notification_service::{
    AmbiguousSend, EventId,
    sent_mails::{self, Claim, Claimed, NewSentMail, Recorded, SentMails},
};
use shared::contracts::UserCreated;
use sqlx::PgPool;
use tests::TestDb;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

async fn migrated(db: &TestDb) -> PgPool {
    let pool = db.pool().await;
    sqlx::migrate!("./migrations").run(&pool).await.unwrap();
    pool
}

fn process(pool: &PgPool, on_ambiguous: AmbiguousSend) -> SentMails {
    SentMails::new(pool.clone(), LEASE, on_ambiguous, TIMEOUT)
}

/// The id of a `user.created` about a new user (derived, as for a NestJS emit).
fn new_event() -> EventId {
    let created = UserCreated {
        id: Uuid::new_v4(),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: chrono::DateTime::default(),
    };
    EventId::derived(&created).unwrap()
}

async fn try_claim(process: &SentMails, event_id: &EventId, user_id: Uuid, message_id: &str) -> Claimed {
    let mail = NewSentMail { event_id, user_id, recipient: "ada@example.com", message_id };
    process.claim(&mail, false).await.unwrap()
}

fn won(claimed: Claimed) -> Claim {
    match claimed {
        Claimed::Won(claim) => claim,
        other => panic!("expected to win the claim, got {other:?}"),
    }
}

/// Moves the event's claim back in time, as if its attempt had started long ago.
async fn age(pool: &PgPool, event_id: &EventId) {
    sqlx::query!("UPDATE sent_mails SET started_at = now() - interval '1 hour' WHERE event_id = $1", event_id.as_str())
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_running_attempt_makes_another_process_wait_and_then_find_the_mail_sent() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (first, second) = (process(&pool, AmbiguousSend::Resend), process(&pool, AmbiguousSend::Resend));
    let (event_id, user_id) = (new_event(), Uuid::new_v4());

    let claim = won(try_claim(&first, &event_id, user_id, "m@x").await);
    assert_eq!((claim.attempt, claim.ambiguous), (1, false));
    // Refused at once, not blocked on a lock: no connection is held while the first sends.
    assert_eq!(try_claim(&second, &event_id, user_id, "m@x").await, Claimed::Busy);

    assert_eq!(first.record_sent(&claim).await.unwrap(), Recorded::Sent);
    assert_eq!(try_claim(&second, &event_id, user_id, "m@x").await, Claimed::AlreadySent);
    assert!(sent_mails::is_sent(&pool, event_id.as_str()).await.unwrap());
}

#[tokio::test]
async fn a_released_claim_lets_the_next_delivery_send() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let service = process(&pool, AmbiguousSend::Resend);
    let (event_id, user_id) = (new_event(), Uuid::new_v4());

    let claim = won(try_claim(&service, &event_id, user_id, "m@x").await);
    service.release(&claim).await.unwrap();
    assert!(!sent_mails::is_sent(&pool, event_id.as_str()).await.unwrap());

    let retry = won(try_claim(&service, &event_id, user_id, "m@x").await);
    assert_eq!((retry.attempt, retry.ambiguous), (1, false), "a clean start");
    service.record_sent(&retry).await.unwrap();
    assert_eq!(try_claim(&service, &event_id, user_id, "m@x").await, Claimed::AlreadySent);
}

#[tokio::test]
async fn an_abandoned_claim_of_another_process_is_resent_with_its_message_id_or_parked() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let crashed = process(&pool, AmbiguousSend::Resend);
    let (event_id, user_id) = (new_event(), Uuid::new_v4());
    won(try_claim(&crashed, &event_id, user_id, "first@old.example").await);
    age(&pool, &event_id).await;

    let parking = process(&pool, AmbiguousSend::Park);
    assert_eq!(try_claim(&parking, &event_id, user_id, "new@x").await, Claimed::Ambiguous { attempt: 1 });

    let resending = process(&pool, AmbiguousSend::Resend);
    let claim = won(try_claim(&resending, &event_id, user_id, "new@x").await);
    assert_eq!((claim.attempt, claim.ambiguous), (2, true));
    assert_eq!(claim.message_id, "first@old.example", "a resend carries the first attempt's Message-ID");
    assert_eq!(try_claim(&parking, &event_id, user_id, "new@x").await, Claimed::Busy, "the resend is running now");
}

#[tokio::test]
async fn this_process_retakes_its_own_claim_plainly_unless_an_attempt_was_interrupted() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let service = process(&pool, AmbiguousSend::Park);
    let (event_id, user_id) = (new_event(), Uuid::new_v4());
    let mail = NewSentMail { event_id: &event_id, user_id, recipient: "ada@example.com", message_id: "m@x" };

    // The first attempt's release failed (the claim stayed), but it ended before any 250.
    won(service.claim(&mail, false).await.unwrap());
    let retry = won(service.claim(&mail, false).await.unwrap());
    assert_eq!((retry.attempt, retry.ambiguous), (2, false));

    // An attempt interrupted mid-send: in doubt, so park (as configured) rather than resend.
    assert_eq!(service.claim(&mail, true).await.unwrap(), Claimed::Ambiguous { attempt: 2 });
    let resending = SentMails::new(pool.clone(), LEASE, AmbiguousSend::Resend, TIMEOUT);
    age(&pool, &event_id).await;
    assert!(won(resending.claim(&mail, false).await.unwrap()).ambiguous);
}

#[tokio::test]
async fn another_event_about_the_same_user_waits_for_a_running_claim_and_skips_a_sent_one() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (first, second) = (process(&pool, AmbiguousSend::Resend), process(&pool, AmbiguousSend::Resend));
    let user_id = Uuid::new_v4();
    let (one, other) = (new_event(), new_event());

    let claim = won(try_claim(&first, &one, user_id, "one@x").await);
    assert_eq!(try_claim(&second, &other, user_id, "other@x").await, Claimed::Busy);
    first.release(&claim).await.unwrap();
    let claim = won(try_claim(&second, &other, user_id, "other@x").await);
    second.record_sent(&claim).await.unwrap();
    assert_eq!(try_claim(&first, &one, user_id, "one@x").await, Claimed::AlreadySent, "one welcome per user");
}

#[tokio::test]
async fn a_record_after_a_takeover_still_marks_the_mail_sent_once() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (slow, other) = (process(&pool, AmbiguousSend::Resend), process(&pool, AmbiguousSend::Resend));
    let (event_id, user_id) = (new_event(), Uuid::new_v4());

    let first = won(try_claim(&slow, &event_id, user_id, "m@x").await);
    age(&pool, &event_id).await;
    let second = won(try_claim(&other, &event_id, user_id, "m@x").await);
    assert_eq!(slow.record_sent(&first).await.unwrap(), Recorded::Sent);
    assert_eq!(other.record_sent(&second).await.unwrap(), Recorded::Overtaken);
    // The overtaken attempt's release (had its send failed) cannot undo the record.
    other.release(&second).await.unwrap();
    assert!(sent_mails::is_sent(&pool, event_id.as_str()).await.unwrap());
}

#[tokio::test]
async fn an_event_id_reused_for_another_user_is_already_handled_even_while_its_first_claim_runs() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (first, second) = (process(&pool, AmbiguousSend::Park), process(&pool, AmbiguousSend::Park));
    let event_id = new_event();
    let claim = won(try_claim(&first, &event_id, Uuid::new_v4(), "m@x").await);

    // A producer reusing an event id for another user: that event was handled; no second
    // mail, no wait for the running attempt, not the ambiguous case even once it is stale.
    assert_eq!(try_claim(&second, &event_id, Uuid::new_v4(), "m@x").await, Claimed::AlreadySent);
    age(&pool, &event_id).await;
    assert_eq!(try_claim(&second, &event_id, Uuid::new_v4(), "m@x").await, Claimed::AlreadySent);

    assert!(!second.is_sent(event_id.as_str()).await.unwrap(), "claimed is not sent");
    assert_eq!(first.record_sent(&claim).await.unwrap(), Recorded::Sent);
    assert!(second.is_sent(event_id.as_str()).await.unwrap());
    assert_eq!(try_claim(&second, &event_id, Uuid::new_v4(), "m@x").await, Claimed::AlreadySent);
}

#[tokio::test]
async fn another_event_about_the_same_user_skips_an_abandoned_claim_that_its_own_event_resolves() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (first, second) = (process(&pool, AmbiguousSend::Resend), process(&pool, AmbiguousSend::Resend));
    let (event_id, other_event, user_id) = (new_event(), new_event(), Uuid::new_v4());
    won(try_claim(&first, &event_id, user_id, "m@x").await);
    age(&pool, &event_id).await;

    // The first event's attempt did not finish: its own redelivery resends or parks it. The
    // other event about the same user would only duplicate that mail, nor does it wait.
    assert_eq!(try_claim(&second, &other_event, user_id, "n@x").await, Claimed::AlreadySent);
    let taken_over = won(try_claim(&second, &event_id, user_id, "m@x").await);
    assert_eq!((taken_over.attempt, taken_over.ambiguous), (2, true));
}
