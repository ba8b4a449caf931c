//! The outbox relay: publishes outbox rows as NestJS-shaped events and marks them published.
//!
//! Guarantees:
//! - **at least once, never lost**: a row is marked published only after the broker's
//!   publisher confirm for a persistent message; a failure leaves it for the next attempt
//!   (with backoff), a crash between confirm and commit republishes it, with the same
//!   `message_id` (the row id) so consumers can tell;
//! - **no concurrent double publish across instances**: rows are claimed with
//!   `FOR UPDATE SKIP LOCKED` in a transaction held while publishing;
//! - **prompt**: woken by the outbox `NOTIFY`, which Postgres delivers at commit to every
//!   instance's listener (this one's signups included), and by a slow safety poll;
//! - **generic**: a row goes out as stored (pattern, payload text, id, trace); the relay knows
//!   no event type;
//! - **flushes on shutdown**: after the HTTP server stopped, one last drain (bounded by
//!   [`FLUSH_TIMEOUT`]) publishes what the last requests wrote;
//! - **bounded table**: at every safety poll, rows published more than `OUTBOX_RETENTION_SECS`
//!   ago are deleted, [`PRUNE_BATCH`] rows per statement and at most [`PRUNE_BATCHES`]
//!   statements per poll, so pruning a large backlog never holds long locks or starves
//!   publishing.

use std::time::Duration;

use futures::future::join_all;
use shared::{Client, EmitError, EmitOptions, TraceContext, contracts::pattern_value, error::chain};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::OutboxConfig,
    outbox::{self, OutboxRow},
};

/// How long one publish may wait for its confirm before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause after a failed batch; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The final drain at shutdown may take this long; what is left goes out after the restart.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Published rows deleted per statement when pruning.
pub const PRUNE_BATCH: u32 = 1000;
/// Pruning statements per safety poll at most (the rest waits for the next poll).
pub const PRUNE_BATCHES: u32 = 10;

/// Publishes the outbox. See the module docs.
pub struct Relay {
    pool: PgPool,
    client: Client,
    /// Woken by the outbox listener, which [`Relay::run`] runs alongside the publishing loop.
    wake: Notify,
    batch_size: u32,
    poll_interval: Duration,
    retention: Duration,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub claimed: usize,
    pub published: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed")]
    Database(#[from] sqlx::Error),
    #[error("{failed} event(s) could not be published")]
    Publish {
        failed: usize,
        #[source]
        source: PublishError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
}

impl Relay {
    pub fn new(pool: PgPool, client: Client, config: OutboxConfig) -> Self {
        let OutboxConfig { batch_size, poll_interval, retention } = config;
        Self { pool, client, wake: Notify::new(), batch_size: batch_size.max(1), poll_interval, retention }
    }

    /// Deletes rows published more than the retention period ago: batches of [`PRUNE_BATCH`],
    /// at most [`PRUNE_BATCHES`] of them. Returns how many rows it deleted.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let mut total = 0;
        for _ in 0..PRUNE_BATCHES {
            let deleted = outbox::prune(&mut connection, self.retention, PRUNE_BATCH).await?;
            total += deleted;
            if deleted < u64::from(PRUNE_BATCH) {
                break;
            }
        }
        if total > 0 {
            metrics::counter!("outbox_pruned_total").increment(total);
            tracing::debug!(pruned = total, "outbox relay pruned published rows");
        }
        Ok(total)
    }

    /// Claims one batch, publishes it concurrently, marks what the broker confirmed, commits.
    /// Rows that failed stay unpublished (attempts + 1) and the error is returned.
    pub async fn publish_batch(&self) -> Result<BatchOutcome, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let rows = outbox::claim(&mut transaction, self.batch_size).await?;
        if rows.is_empty() {
            transaction.commit().await?;
            return Ok(BatchOutcome::default());
        }
        let results = join_all(rows.iter().map(|row| self.publish(row))).await;
        let mut published = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        let mut first_error = None;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => published.push(row.id),
                Err(error) => {
                    failed.push(row.id);
                    first_error.get_or_insert(error);
                }
            }
        }
        outbox::mark_published(&mut transaction, &published).await?;
        if let Some(error) = &first_error {
            outbox::record_failure(&mut transaction, &failed, &chain(error)).await?;
        }
        transaction.commit().await?;
        metrics::counter!("outbox_published_total").increment(published.len() as u64);
        let outcome = BatchOutcome { claimed: rows.len(), published: published.len() };
        match first_error {
            None => Ok(outcome),
            Some(source) => {
                metrics::counter!("outbox_publish_failures_total").increment(failed.len() as u64);
                Err(RelayError::Publish { failed: failed.len(), source })
            }
        }
    }

    /// Publishes batches until a batch comes back short (the outbox is drained).
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let outcome = self.publish_batch().await?;
            total += outcome.published;
            if outcome.claimed < self.batch_size as usize {
                return Ok(total);
            }
        }
    }

    /// Publishes one row as stored, waiting for the broker's confirm: its payload text goes
    /// out byte for byte, its id is the `message_id`, its trace the `traceparent`.
    async fn publish(&self, row: &OutboxRow) -> Result<(), PublishError> {
        let options = EmitOptions {
            target: None,
            message_id: Some(row.id.to_string()),
            trace: row.traceparent.as_deref().and_then(TraceContext::parse),
        };
        let pattern = pattern_value(&row.pattern);
        let emit = self.client.emit_raw(&pattern, &*row.payload, options);
        tokio::time::timeout(PUBLISH_TIMEOUT, emit).await.map_err(|_| PublishError::Timeout(PUBLISH_TIMEOUT))??;
        Ok(())
    }

    /// Publishes until `stop`, then flushes once; the outbox listener runs alongside and
    /// stops with it. See the module docs.
    pub async fn run(self, stop: CancellationToken) {
        tokio::join!(listen(&self.pool, &self.wake, &stop), self.publish_until(&stop));
    }

    async fn publish_until(&self, stop: &CancellationToken) {
        let mut failures: u32 = 0;
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.client.is_connected() {
                // Claiming rows now would only count failed attempts: wait for the link.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    _ = self.client.wait_connected(MAX_BACKOFF) => continue,
                }
            }
            match self.drain().await {
                Ok(_) => failures = 0,
                Err(error) => {
                    let delay = backoff(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %chain(&error), ?delay, "outbox relay: publishing failed; will retry");
                    if !self.pause_after_failure(delay, stop).await {
                        break;
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                _ = poll.tick() => {
                    if let Err(error) = self.prune().await {
                        tracing::warn!(error = %chain(&error), "outbox relay: pruning failed; will retry at the next poll");
                    }
                }
            }
        }
        self.flush().await;
    }

    /// Waits before the next attempt: until the broker link is back (when it is down) or the
    /// backoff passed. Returns false when stopping.
    async fn pause_after_failure(&self, delay: Duration, stop: &CancellationToken) -> bool {
        let wait = async {
            if self.client.is_connected() {
                tokio::time::sleep(delay).await;
            } else {
                // A reconnect ends the wait early: the backlog goes out as soon as it can.
                self.client.wait_connected(MAX_BACKOFF).await;
            }
        };
        tokio::select! {
            () = stop.cancelled() => false,
            () = wait => true,
        }
    }

    async fn flush(&self) {
        match tokio::time::timeout(FLUSH_TIMEOUT, self.drain()).await {
            Ok(Ok(published)) => tracing::info!(published, "outbox relay flushed"),
            Ok(Err(error)) => {
                tracing::warn!(error = %chain(&error), "outbox relay: final flush failed; rows stay for the next start")
            }
            Err(_) => tracing::warn!("outbox relay: final flush timed out; rows stay for the next start"),
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF)
}

/// Listens on the outbox channel and wakes `wake` for every notification (and after every
/// reconnect, since notifications sent while disconnected are lost). Runs until `stop`.
async fn listen(pool: &PgPool, wake: &Notify, stop: &CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let listening = tokio::select! {
            () = stop.cancelled() => return,
            listening = subscribe(pool) => listening,
        };
        match listening {
            Ok(mut listener) => {
                failures = 0;
                wake.notify_one();
                let error = tokio::select! {
                    () = stop.cancelled() => return,
                    error = forward(&mut listener, wake) => error,
                };
                tracing::warn!(error = %chain(&error), "outbox listener lost its connection; reconnecting");
            }
            Err(error) => tracing::warn!(error = %chain(&error), "outbox listener cannot subscribe; retrying"),
        }
        let delay = backoff(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(outbox::CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications until the connection fails; returns that failure.
async fn forward(listener: &mut PgListener, wake: &Notify) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            // The connection was lost (and will be re-established by the next call):
            // notifications may have been missed meanwhile, so look at the table.
            Ok(None) => wake.notify_one(),
            Err(error) => return error,
        }
    }
}
