//! The `outbox` table: events waiting to be published.
//!
//! An event is written in the same transaction as the state change it announces, so the
//! event exists if and only if the change committed: [`enqueue`] inside the caller's
//! transaction, or one statement doing both (signup: [`crate::credentials::insert_announced`]).
//! Either also queues a `NOTIFY` on [`CHANNEL`], which Postgres delivers at commit, so relays
//! wake at once.
//!
//! [`claim`] takes unpublished rows with `FOR UPDATE SKIP LOCKED`: while one relay holds a row
//! (its transaction stays open while it publishes), other relays skip it, so two relays never
//! publish one row concurrently.
//!
//! Published rows are kept for a retention period (for operators tracing an event), then
//! deleted by [`prune`] in bounded batches; unpublished rows are never pruned.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

use shared::{Event, TraceContext};

/// The `LISTEN`/`NOTIFY` channel relays wait on.
pub const CHANNEL: &str = "auth_outbox";

/// An unpublished event as the relay reads it: what it publishes, as written.
#[derive(Debug)]
pub struct OutboxRow {
    /// The event id, sent as the AMQP `message_id`.
    pub id: Uuid,
    /// The routing pattern (`user.created`).
    pub pattern: String,
    /// The event's `data`, the JSON text written by [`NewEvent::new`], not re-encoded.
    pub payload: Box<RawValue>,
    /// The W3C trace context of the request that caused the event.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the event could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("outbox query failed")]
    Database(#[source] sqlx::Error),
}

/// An event row ready to be written: what [`enqueue`] and
/// [`crate::credentials::insert_announced`] put into the table.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub pattern: &'static str,
    /// Serialised from the event's type, so its fields keep their declared order (the `json`
    /// column stores the text as is).
    pub payload: Box<RawValue>,
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// `event` with id `id`, carrying the trace it was caused by.
    pub fn new<E: Event + Serialize>(id: Uuid, event: &E, trace: Option<TraceContext>) -> Result<Self, OutboxError> {
        let payload = serde_json::value::to_raw_value(event).map_err(OutboxError::Encode)?;
        Ok(Self { id, pattern: E::PATTERN, payload, traceparent: trace.map(|trace| trace.traceparent()) })
    }
}

/// Writes `event` (with id `id` and the request's trace) into the outbox, in the caller's
/// transaction, and asks Postgres to notify the relays at commit.
pub async fn enqueue<E: Event + Serialize>(
    connection: &mut PgConnection,
    id: Uuid,
    event: &E,
    trace: Option<TraceContext>,
) -> Result<(), OutboxError> {
    let row = NewEvent::new(id, event, trace)?;
    // `$3::text::json`: the payload goes in as text, so Postgres keeps it byte for byte.
    sqlx::query!(
        "WITH event AS (INSERT INTO outbox (id, pattern, payload, traceparent) VALUES ($1, $2, $3::text::json, $4)) \
         SELECT pg_notify($5, '')",
        row.id,
        row.pattern,
        row.payload.get(),
        row.traceparent,
        CHANNEL,
    )
    .execute(connection)
    .await
    .map_err(OutboxError::Database)?;
    Ok(())
}

/// Locks up to `limit` unpublished rows, oldest first, skipping rows other relays hold.
pub async fn claim(connection: &mut PgConnection, limit: u32) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as!(
        OutboxRow,
        r#"SELECT id, pattern, payload AS "payload: Box<RawValue>", traceparent FROM outbox
           WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        i64::from(limit),
    )
    .fetch_all(connection)
    .await
}

/// Marks rows published (after the broker confirmed them).
pub async fn mark_published(connection: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", ids).execute(connection).await?;
    Ok(())
}

/// Counts a failed attempt on rows that stay unpublished, keeping the last error for operators.
pub async fn record_failure(connection: &mut PgConnection, ids: &[Uuid], error: &str) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)", ids, error)
        .execute(connection)
        .await?;
    Ok(())
}

/// Deletes up to `limit` rows published more than `retention` ago, oldest first; returns how
/// many it deleted.
pub async fn prune(connection: &mut PgConnection, retention: Duration, limit: u32) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM outbox WHERE id IN (\
             SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1::float8) \
             ORDER BY published_at LIMIT $2)",
        retention.as_secs_f64(),
        i64::from(limit),
    )
    .execute(connection)
    .await?;
    Ok(deleted.rows_affected())
}

/// The number of rows not yet published (for tests and operators).
pub async fn pending(connection: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox WHERE published_at IS NULL"#)
        .fetch_one(connection)
        .await
}
