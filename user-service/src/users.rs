//! The `users` table (migrations/0001_users.sql): the only module that runs SQL against it.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use shared::contracts::{User, UserCreated};
use sqlx::{PgPool, Postgres, pool::PoolConnection};
use uuid::Uuid;

use crate::db::TRUSTED_IF_USED_WITHIN;

/// The users projection behind a connection pool.
///
/// Every call is bounded by one deadline, waiting for a pooled connection included, so a
/// database that is down or hanging costs a caller at most that long before a typed error.
#[derive(Debug, Clone)]
pub struct Users {
    pool: PgPool,
    timeout: Duration,
}

/// What [`Users::project`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// The row was inserted or replaced by the event's data.
    Applied,
    /// The row already holds this event or a newer one; nothing changed.
    Stale,
}

impl Projected {
    /// The label of the `users_projected_total` metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
        }
    }
}

/// A database call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the database call failed")]
    Failed(#[source] sqlx::Error),
}

impl DbError {
    /// Whether Postgres rejected the data itself (SQLSTATE class 22, e.g. a NUL character in
    /// a text value): the same data will fail the same way however often it is retried.
    pub fn is_rejected_data(&self) -> bool {
        match self {
            Self::Failed(sqlx::Error::Database(error)) => error.code().is_some_and(|code| code.starts_with("22")),
            _ => false,
        }
    }
}

/// A row as `find_many` reads it (`query_as!` checks the columns against the table).
struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self { id: row.id, email: row.email, name: row.name, created_at: row.created_at }
    }
}

impl Users {
    pub fn new(pool: PgPool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// A reader that keeps one connection of the pool between its queries.
    pub fn reader(&self) -> UsersReader {
        UsersReader { users: self.clone(), connection: None, last_used: Instant::now() }
    }

    /// Writes the profile an event carries, unless the row already holds a newer version.
    ///
    /// A row's version is `(created_at, event_id)`: the event with the later `createdAt`
    /// wins, and between two events with the same `createdAt` the greater event id wins. The
    /// result depends only on the set of events seen, never on their delivery order, and
    /// seeing an event again changes nothing (not even `updated_at`). A publisher that sets
    /// no event id passes `""`; two such events with one `createdAt` keep the first.
    pub async fn project(&self, user: &UserCreated, event_id: &str) -> Result<Projected, DbError> {
        let query = sqlx::query!(
            "INSERT INTO users (id, email, name, created_at, event_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (id) DO UPDATE
                SET email = EXCLUDED.email, name = EXCLUDED.name, created_at = EXCLUDED.created_at,
                    event_id = EXCLUDED.event_id, updated_at = now()
              WHERE (users.created_at, users.event_id) < (EXCLUDED.created_at, EXCLUDED.event_id)",
            user.id,
            user.email,
            user.name,
            user.created_at,
            event_id,
        )
        .execute(&self.pool);
        let written = self.bounded(query).await?.rows_affected();
        Ok(if written == 0 { Projected::Stale } else { Projected::Applied })
    }

    /// Whether the database answers a trivial query now (for `/readyz`).
    pub async fn ping(&self) -> bool {
        self.bounded(sqlx::query_scalar!(r#"SELECT 1 AS "alive!""#).fetch_one(&self.pool)).await.is_ok()
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, DbError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(DbError::Failed),
            Err(_) => Err(DbError::TimedOut(self.timeout)),
        }
    }
}

/// Reads on one connection held across calls, for a long-lived task that queries back to back:
/// it skips the pool's health check on every return (a ping, i.e. a round trip). A connection
/// left unused for a while goes back to the pool, whose acquire checks it; after any failure
/// the connection is closed; either way the next call takes a fresh one.
#[derive(Debug)]
pub struct UsersReader {
    users: Users,
    connection: Option<PoolConnection<Postgres>>,
    last_used: Instant,
}

impl UsersReader {
    /// The profiles of those of `ids` the projection has, in no particular order.
    pub async fn find_many(&mut self, ids: &[Uuid]) -> Result<Vec<User>, DbError> {
        if self.last_used.elapsed() > TRUSTED_IF_USED_WITHIN {
            self.connection = None;
        }
        self.last_used = Instant::now();
        let (users, held) = (&self.users, &mut self.connection);
        let found = users
            .bounded(async {
                let connection = match held {
                    Some(connection) => connection,
                    None => held.insert(users.pool.acquire().await?),
                };
                // A lone id (every call when the service is not busy) takes the plain equality
                // form: Postgres binds no array and plans an ordinary index lookup.
                match ids {
                    [id] => sqlx::query_as!(UserRow, "SELECT id, email, name, created_at FROM users WHERE id = $1", id)
                        .fetch_optional(&mut **connection)
                        .await
                        .map(|row| row.into_iter().collect()),
                    _ => {
                        // One index probe per id. `WHERE id = ANY($1)` let Postgres choose a
                        // sequential scan of a small table (1,000 rows: every row compared
                        // with every id, ~0.1 ms), and the LATERAL ... LIMIT 1 keeps the
                        // planner from turning this back into that (a hash join over a scan).
                        sqlx::query_as!(
                            UserRow,
                            r#"SELECT u.id AS "id!", u.email AS "email!", u.name AS "name!", u.created_at AS "created_at!"
                                 FROM unnest($1::uuid[]) AS wanted(id)
                                 CROSS JOIN LATERAL (
                                     SELECT id, email, name, created_at FROM users WHERE users.id = wanted.id LIMIT 1
                                 ) AS u"#,
                            ids
                        )
                        .fetch_all(&mut **connection)
                        .await
                    }
                }
            })
            .await;
        if found.is_err()
            && let Some(mut broken) = self.connection.take()
        {
            broken.close_on_drop();
        }
        Ok(found?.into_iter().map(User::from).collect())
    }
}
