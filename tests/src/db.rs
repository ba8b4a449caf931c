//! A throwaway Postgres database per test.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};

use crate::{eventually, infra, teardown, urls};

/// The database the kit connects to for `CREATE DATABASE` / `DROP DATABASE`.
const MAINTENANCE_DB: &str = "postgres";
/// How long dropping the database at teardown may take before the test moves on without it.
const DROP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long creation may keep retrying while another session blocks the template database.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per pool from [`TestDb::pool`], kept small so many parallel tests fit within
/// the server's `max_connections`.
const POOL_SIZE: u32 = 5;

/// An empty database of its own for one test, dropped when this value is dropped.
///
/// Guarantees: the name is fresh (`test_<32 hex digits>`), so no two `TestDb`s of any process
/// share a database; dropping it runs `DROP DATABASE … WITH (FORCE)` (closing any sessions
/// still connected, pools included) and waits at most 15 s for that, never panicking: a
/// failure is reported on stderr and the test goes on. Needs Postgres 13 or later.
#[derive(Debug)]
pub struct TestDb {
    /// The database's name, e.g. `test_5f0c…`.
    pub name: String,
    /// A URL that connects to this database (the server URL with the name as its path).
    pub url: String,
    /// The server URL (no database name), used again to drop the database.
    server_url: String,
}

impl TestDb {
    /// Creates an empty database on the server from [`infra::postgres_url`].
    ///
    /// # Panics
    /// When the server cannot be reached or refuses to create the database.
    pub async fn create() -> TestDb {
        TestDb::create_on(&infra::postgres_url().await).await
    }

    /// Creates an empty database on the server at `server_url` (a URL whose database name,
    /// if any, is ignored). The user in the URL must be allowed to create databases.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses to create the database.
    pub async fn create_on(server_url: &str) -> TestDb {
        let server_url = urls::with_path(server_url, "");
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let maintenance_url = urls::with_path(&server_url, MAINTENANCE_DB);
        let statement = format!("CREATE DATABASE \"{name}\"");
        // CREATE DATABASE fails while another session uses the template; such a clash is
        // brief, so it is retried until CREATE_TIMEOUT.
        eventually(CREATE_TIMEOUT, || async {
            let mut connection = PgConnection::connect(&maintenance_url).await?;
            let created = sqlx::raw_sql(AssertSqlSafe(statement.clone())).execute(&mut connection).await;
            let _closed = connection.close().await;
            created.map(|_| ())
        })
        .await;
        TestDb { url: urls::with_path(&server_url, &name), name, server_url }
    }

    /// A new connection pool to this database (at most 5 connections). Each call makes a new
    /// pool; its connections are closed by the drop of the database at the latest.
    ///
    /// # Panics
    /// When the database cannot be reached.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to test database {}: {error}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let maintenance_url = urls::with_path(&self.server_url, MAINTENANCE_DB);
        let name = self.name.clone();
        let dropped = teardown::run_bounded(format!("drop-{name}"), DROP_TIMEOUT, move || async move {
            drop_database(&maintenance_url, &name).await
        });
        if let Err(error) = dropped.and_then(|result| result) {
            eprintln!("test kit: could not drop test database {}: {error}", self.name);
        }
    }
}

/// Runs `DROP DATABASE IF EXISTS name WITH (FORCE)` through the maintenance database.
async fn drop_database(maintenance_url: &str, name: &str) -> Result<(), String> {
    let mut connection = PgConnection::connect(maintenance_url).await.map_err(|error| error.to_string())?;
    let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let dropped = sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&mut connection)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string());
    let _closed = connection.close().await;
    dropped
}
