//! The claim that makes deliveries of one event mutually exclusive, at the database level.

use std::time::Duration;

use notification_service::{
    EventId,
    sent_mails::{self, NewSentMail},
};
use sqlx::PgPool;
use tests::TestDb;
use uuid::Uuid;

async fn migrated(db: &TestDb) -> PgPool {
    let pool = db.pool().await;
    sqlx::migrate!("./migrations").run(&pool).await.unwrap();
    pool
}

async fn try_claim(pool: &PgPool, event_id: &EventId, user_id: Uuid) -> Option<sent_mails::Claim> {
    let mail = NewSentMail { event_id, user_id, recipient: "ada@example.com", message_id: "x@notification-service" };
    sent_mails::claim(pool, &mail).await.unwrap()
}

#[tokio::test]
async fn a_concurrent_claim_waits_for_the_first_and_then_finds_the_mail_sent() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (event_id, user_id) = (EventId::derived(Uuid::new_v4()), Uuid::new_v4());
    let first = try_claim(&pool, &event_id, user_id).await.expect("the first claim wins");

    let second = tokio::spawn({
        let (pool, event_id) = (pool.clone(), event_id.clone());
        async move { try_claim(&pool, &event_id, user_id).await.is_some() }
    });
    // The second delivery is blocked on the first one's uncommitted row, not refused early.
    tests::eventually(Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 { Ok(()) } else { Err(format!("{waiting} sessions waiting on a lock")) }
    })
    .await;
    assert!(!second.is_finished());

    first.mark_sent().await.unwrap();
    assert!(!second.await.unwrap(), "once the first committed, the second sees the mail as sent");
    assert!(sent_mails::is_sent(&pool, event_id.as_str()).await.unwrap());
}

#[tokio::test]
async fn a_released_claim_lets_the_next_delivery_send() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let (event_id, user_id) = (EventId::derived(Uuid::new_v4()), Uuid::new_v4());

    try_claim(&pool, &event_id, user_id).await.unwrap().release().await;
    assert!(!sent_mails::is_sent(&pool, event_id.as_str()).await.unwrap());

    let retry = try_claim(&pool, &event_id, user_id).await.expect("the retry claims again");
    retry.mark_sent().await.unwrap();
    assert!(try_claim(&pool, &event_id, user_id).await.is_none());
}
