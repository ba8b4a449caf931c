//! Building and running the service: what `main` and the tests both call.
//!
//! [`App::build`] migrates the database, starts the coalescing reader, the broker server and
//! the ops port, and returns the bound ops address. When the shutdown token fires the service
//! stops in dependency order:
//! 1. the consumers are cancelled and in-flight handlers finish (within `SHUTDOWN_GRACE_MS`);
//!    the ops port closes;
//! 2. the reader answers what is still queued and stops;
//! 3. the pool closes.
//!
//! [`App::run_until_stopped`] resolves when all of that is done.

use std::{net::SocketAddr, time::Duration};

use shared::{CancellationToken, Listener, Server, ServerConfig, ServerHandle, ops};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    config::{Config, SERVICE},
    db::{self, DatabaseError},
    get_user::get_user,
    lookups::{LOOKUPS_METRIC, QUERIES_METRIC, Reader, UserLookups},
    projection::{PROJECTED_METRIC, on_user_created},
    state::AppState,
    users::Users,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("the ops port {addr} could not be bound")]
    Ops {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running service: its database migrated, its queues being consumed (or about to be,
/// once the broker answers) and its ops port bound. It runs until the shutdown token given
/// to [`App::build`] is cancelled.
pub struct App {
    ops_addr: SocketAddr,
    server: ServerHandle,
    ops: JoinHandle<()>,
    reader: Reader,
    pool: PgPool,
}

impl App {
    /// Migrates the database, starts the server and binds the ops port (port 0 picks a free
    /// one: [`App::ops_addr`] tells which). Returns once the ops port is bound; the broker
    /// connection is made (and remade) in the background, and `/readyz` tells when it is up.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        metrics::describe_counter!(PROJECTED_METRIC, "user.created events handled, by outcome (applied, stale)");
        metrics::describe_counter!(LOOKUPS_METRIC, "get_user lookups answered by the coalescing reader");
        metrics::describe_counter!(QUERIES_METRIC, "queries the coalescing reader ran (lookups / queries: mean batch)");
        let pool = db::pool(&config.database)?;
        db::migrate(&pool, &shutdown).await?;
        let users = Users::new(pool.clone(), config.database.database_timeout);
        let (lookups, reader) = UserLookups::start(&users, config.database.database_timeout);

        // A child token, so that a failed start stops what it already started.
        let stop = shutdown.child_token();
        let server = Server::new(AppState { users: users.clone(), lookups })
            .request(get_user)
            .event(on_user_created)
            .listen(Listener::queue(&config.user_queue))
            .listen(Listener::queue(&config.user_events_queue).bind_events(&config.broker.events_exchange))
            .start(server_config(&config), stop.clone());

        let readiness = ops::Readiness::default()
            .check("database", move || {
                let users = users.clone();
                async move { users.ping().await }
            })
            .flag("broker", server.readiness());
        let (ops_addr, ops) = match ops::serve(config.ops.ops_addr, ops::router(readiness), stop.clone()).await {
            Ok(bound) => bound,
            Err(source) => {
                stop.cancel();
                server.stopped().await;
                reader.stop().await;
                pool.close().await;
                return Err(StartupError::Ops { addr: config.ops.ops_addr, source });
            }
        };
        tracing::info!(%ops_addr, queue = %config.user_queue, events_queue = %config.user_events_queue, "user-service started");
        Ok(Self { ops_addr, server, ops, reader, pool })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Waits until every queue is being consumed, up to `deadline`; returns whether it is.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        self.server.wait_ready(deadline).await
    }

    /// Runs until the shutdown token is cancelled, then waits for the shutdown to complete
    /// (see the module docs for the order).
    pub async fn run_until_stopped(self) {
        self.server.stopped().await;
        if let Err(error) = self.ops.await {
            tracing::error!(error = %error, "ops server task failed");
        }
        // Only now: the handlers that were still running needed the reader to answer them.
        self.reader.stop().await;
        self.pool.close().await;
        tracing::info!("user-service stopped");
    }
}

fn server_config(config: &Config) -> ServerConfig {
    let mut server = ServerConfig::new(config.broker.broker_config(SERVICE.name), SERVICE.name);
    config.consumer.apply(&mut server);
    server.retry = config.retry.policy();
    server.shutdown_grace = config.ops.shutdown_grace;
    server
}
