//! Coalescing concurrent `get_user` reads into few queries.
//!
//! Each lookup costs Postgres a round trip (and the pool a health ping when the connection
//! returns), and under load those round trips, not RabbitMQ, bound the service's throughput
//! (BENCH.md). So lookups go through a queue served by one reader task, which takes every
//! lookup waiting at that moment and answers them all with one query (an index probe per id),
//! on a connection it keeps between queries ([`crate::users::UsersReader`]).
//! Nothing waits to fill a batch: an idle reader takes a lone lookup at once; batches form
//! only while a query is running, i.e. exactly when the database is the bottleneck, and they
//! grow with the load. One reader gave the best throughput at concurrency 16 and 64 (at 1
//! it makes no difference): more readers run more, smaller queries.

use std::{collections::HashMap, sync::Arc, time::Duration};

use shared::{CancellationToken, contracts::User};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::users::{DbError, Users, UsersReader};

/// The most lookups one query answers, which bounds its parameter array and its result.
const MAX_BATCH: usize = 256;
/// Lookups waiting for the reader; the handlers' prefetch keeps the real number far lower.
const QUEUE_CAPACITY: usize = 4096;
/// Metric: lookups answered by the reader (each `get_user` that reached it).
pub const LOOKUPS_METRIC: &str = "user_lookups_total";
/// Metric: queries the reader ran; `user_lookups_total / user_lookup_queries_total` is the
/// mean batch size.
pub const QUERIES_METRIC: &str = "user_lookup_queries_total";

/// A cheap-to-clone handle for reading profiles by id.
///
/// Every [`UserLookups::find`] answers within the database timeout, queueing included.
#[derive(Debug, Clone)]
pub struct UserLookups {
    queue: mpsc::Sender<Lookup>,
    timeout: Duration,
}

/// What a lookup is answered with: the profile if there is one, or the batch's query error.
type Answer = Result<Option<User>, Arc<DbError>>;

#[derive(Debug)]
struct Lookup {
    id: Uuid,
    reply: oneshot::Sender<Answer>,
    /// The span of the request asking, the parent of the query's span when traces are
    /// exported (`Span::none()` otherwise: nothing captured on the hot path).
    caller: tracing::Span,
}

/// Why a lookup has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The query of the batch this lookup was part of failed.
    #[error("reading the users failed")]
    Read(#[source] Arc<DbError>),
    /// No answer came within the database timeout.
    #[error("no answer from the database within {0:?}")]
    TimedOut(Duration),
    /// The reader has stopped (the service is shutting down).
    #[error("the user reader has stopped")]
    Stopped,
}

/// The reader task, owned by whoever started it: [`Reader::stop`] ends it and waits for it;
/// dropping it without that aborts the task, so it never outlives its owner.
#[derive(Debug)]
#[must_use = "the reader runs until it is stopped; dropping it aborts it"]
pub struct Reader {
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl UserLookups {
    /// Starts the reader on `users`; each lookup may wait at most `timeout` for its answer.
    pub fn start(users: &Users, timeout: Duration) -> (Self, Reader) {
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        let stop = CancellationToken::new();
        let task = tokio::spawn(read(users.reader(), waiting, stop.clone()));
        (Self { queue, timeout }, Reader { stop, task: AbortOnDropHandle::new(task) })
    }

    /// The profile of user `id`, if the projection has it.
    pub async fn find(&self, id: Uuid) -> Result<Option<User>, LookupError> {
        let (reply, answer) = oneshot::channel();
        let caller = if shared::trace::exporting() { tracing::Span::current() } else { tracing::Span::none() };
        let asked = async {
            self.queue.send(Lookup { id, reply, caller }).await.map_err(|_| LookupError::Stopped)?;
            answer.await.map_err(|_| LookupError::Stopped)?.map_err(LookupError::Read)
        };
        tokio::time::timeout(self.timeout, asked).await.unwrap_or(Err(LookupError::TimedOut(self.timeout)))
    }
}

impl Reader {
    /// Stops taking lookups (later ones fail with [`LookupError::Stopped`]), answers those
    /// already queued, and waits until the task has ended and given back its connection.
    ///
    /// Called once the handlers have finished: stopping earlier would fail in-flight requests.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(error = %error, "the user reader failed");
        }
    }
}

/// The reader: takes whatever is queued and answers it with one query, until it is stopped
/// (or every handle is gone) and the queue is empty.
async fn read(mut reader: UsersReader, mut waiting: mpsc::Receiver<Lookup>, stop: CancellationToken) {
    let mut stopping = false;
    loop {
        // Only the wait for a first lookup races the stop (`recv` loses nothing when it is
        // the branch not taken); a batch, once started, is gathered and answered.
        let first = tokio::select! {
            // Closing refuses new lookups but keeps the queued ones for `recv`.
            () = stop.cancelled(), if !stopping => {
                waiting.close();
                stopping = true;
                continue;
            }
            first = waiting.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        let batch = gather(first, &mut waiting).await;
        answer(&mut reader, batch).await;
    }
}

/// Answers one batch with one query.
async fn answer(reader: &mut UsersReader, batch: Vec<Lookup>) {
    // Callers that gave up meanwhile need no answer.
    let batch: Vec<Lookup> = batch.into_iter().filter(|lookup| !lookup.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    let ids: Vec<Uuid> = batch.iter().map(|lookup| lookup.id).collect();
    metrics::counter!(QUERIES_METRIC).increment(1);
    metrics::counter!(LOOKUPS_METRIC).increment(ids.len() as u64);
    let callers = batch.iter().map(|lookup| &lookup.caller);
    let query = shared::trace::batch_query_span(callers, "SELECT", "users", batch.len());
    match reader.find_many(&ids).instrument(query).await {
        Ok(found) => {
            let found: HashMap<Uuid, User> = found.into_iter().map(|user| (user.id, user)).collect();
            for lookup in batch {
                let _gone = lookup.reply.send(Ok(found.get(&lookup.id).cloned()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for lookup in batch {
                let _gone = lookup.reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}

/// The batch that starts with `first`: every other lookup already queued (up to [`MAX_BATCH`]).
///
/// Before closing the batch the reader yields to the runtime, once, and again for as long as
/// the last yield brought more lookups: handlers whose deliveries arrived in the same burst
/// are already runnable and queue theirs within that tick. An idle service (nothing else
/// runnable) gets its lone lookup back from one yield, in microseconds; a loaded one sends
/// Postgres fewer, larger queries (BENCH.md).
async fn gather(first: Lookup, waiting: &mut mpsc::Receiver<Lookup>) -> Vec<Lookup> {
    let mut batch = vec![first];
    take_queued(waiting, &mut batch);
    while batch.len() < MAX_BATCH {
        let before = batch.len();
        tokio::task::yield_now().await;
        take_queued(waiting, &mut batch);
        if batch.len() == before {
            break;
        }
    }
    batch
}

/// Moves what is queued now into `batch`, up to [`MAX_BATCH`].
fn take_queued(waiting: &mut mpsc::Receiver<Lookup>, batch: &mut Vec<Lookup>) {
    while batch.len() < MAX_BATCH {
        match waiting.try_recv() {
            Ok(lookup) => batch.push(lookup),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// A table behind a pool that never connects (nothing listens on port 1).
    fn unreachable_users() -> Users {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://postgres@127.0.0.1:1/users");
        Users::new(pool.expect("a lazy pool"), Duration::from_millis(200))
    }

    #[tokio::test]
    async fn stopping_answers_what_is_queued_then_refuses_new_lookups() {
        let (lookups, reader) = UserLookups::start(&unreachable_users(), Duration::from_secs(5));
        let queued = tokio::spawn({
            let lookups = lookups.clone();
            async move { lookups.find(Uuid::new_v4()).await }
        });
        tokio::task::yield_now().await;

        // Handles are still alive: stopping must not wait for them to be dropped.
        tokio::time::timeout(Duration::from_secs(5), reader.stop()).await.expect("stop ends");

        // Queued before the stop: answered by a query (which fails here), not refused.
        let answered = queued.await.expect("the lookup task");
        assert!(matches!(answered, Err(LookupError::Read(_))), "{answered:?}");
        assert!(matches!(lookups.find(Uuid::new_v4()).await, Err(LookupError::Stopped)));
    }

    fn lookup() -> (Lookup, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        (Lookup { id: Uuid::new_v4(), reply, caller: tracing::Span::none() }, answer)
    }

    /// Handlers already runnable when the reader takes a lookup (deliveries of one burst) get
    /// theirs into the same batch, even those that become runnable one after another.
    #[tokio::test]
    async fn a_batch_takes_the_lookups_of_handlers_that_were_runnable_when_it_formed() {
        let (queue, mut waiting) = mpsc::channel(QUEUE_CAPACITY);
        let (first, _answer) = lookup();
        // Five "handlers", runnable now but not yet run, each queueing one lookup; the last
        // one also wakes a sixth, which only runs after them.
        for n in 0..5 {
            let queue = queue.clone();
            tokio::spawn(async move {
                let (next, answer) = lookup();
                queue.send(next).await.expect("the reader is there");
                if n == 4 {
                    let queue = queue.clone();
                    tokio::spawn(async move { queue.send(lookup().0).await.expect("the reader is there") });
                }
                drop(answer);
            });
        }
        let batch = gather(first, &mut waiting).await;
        assert_eq!(batch.len(), 7, "the first lookup, the five and the one they woke");
        assert!(waiting.is_empty());
    }

    /// With nothing else runnable, a lone lookup is a batch of one at once.
    #[tokio::test]
    async fn a_lone_lookup_is_a_batch_of_one() {
        let (_queue, mut waiting) = mpsc::channel(QUEUE_CAPACITY);
        let (first, _answer) = lookup();
        let batch = tokio::time::timeout(Duration::from_secs(5), gather(first, &mut waiting)).await.expect("no wait");
        assert_eq!(batch.len(), 1);
    }
}
