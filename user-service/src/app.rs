//! Start-up: database, broker server and ops port, wired from a [`Config`].

use std::{net::SocketAddr, time::Duration};

use secrecy::ExposeSecret;
use shared::{BrokerConfig, CancellationToken, Listener, Server, ServerConfig, ServerHandle, ops};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    config::Config,
    database::{self, DatabaseError},
    get_user::get_user,
    lookups::UserLookups,
    projection::{PROJECTED_METRIC, on_user_created},
    users::Users,
};

/// What the handlers share: the table for writes, the coalescing reader for `get_user`.
#[derive(Debug, Clone)]
pub struct AppState {
    pub users: Users,
    pub lookups: UserLookups,
}

/// The name the service gives itself on the broker and in dead-letter headers.
pub const SERVICE: &str = "user-service";

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
    reader: JoinHandle<()>,
    pool: PgPool,
}

impl App {
    /// Migrates the database, starts the server and binds the ops port. Returns once the
    /// ops port is bound; the broker connection is made (and remade) in the background, and
    /// `/readyz` tells when it is up.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        metrics::describe_counter!(PROJECTED_METRIC, "user.created events handled, by outcome (applied, stale)");
        let pool = database::pool(&config.database_url, config.database_pool_size, config.database_timeout)?;
        database::migrate(&pool, &shutdown).await?;
        let users = Users::new(pool.clone(), config.database_timeout);
        let (lookups, reader) = UserLookups::start(&users, config.database_timeout);

        // A child token, so that a failed start stops what it already started.
        let stop = shutdown.child_token();
        let server = Server::new(AppState { users: users.clone(), lookups })
            .request(get_user)
            .event(on_user_created)
            .listen(Listener::queue(&config.user_queue))
            .listen(Listener::queue(&config.user_events_queue).bind_events(&config.events_exchange))
            .start(server_config(&config), stop.clone());

        let readiness = ops::Readiness::default()
            .check("database", move || {
                let users = users.clone();
                async move { users.ping().await }
            })
            .flag("broker", server.readiness());
        let (ops_addr, ops) = match ops::serve(config.ops_addr, ops::router(readiness), stop.clone()).await {
            Ok(bound) => bound,
            Err(source) => {
                stop.cancel();
                server.stopped().await;
                return Err(StartupError::Ops { addr: config.ops_addr, source });
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

    /// Waits for the shutdown to complete: consumers cancelled, in-flight handlers finished
    /// (within the grace period), ops port closed, database connections closed.
    pub async fn run_until_stopped(self) {
        self.server.stopped().await;
        if let Err(error) = self.ops.await {
            tracing::error!(error = %error, "ops server task failed");
        }
        // The server held the last lookup handles: the reader ends once it answered them all.
        if let Err(error) = self.reader.await {
            tracing::error!(error = %error, "the user reader failed");
        }
        self.pool.close().await;
        tracing::info!("user-service stopped");
    }
}

fn server_config(config: &Config) -> ServerConfig {
    let broker = BrokerConfig::new(config.amqp_url.expose_secret(), SERVICE);
    let mut server = ServerConfig::new(broker, SERVICE);
    server.prefetch = config.prefetch;
    server.retry = config.retry.clone();
    server.shutdown_grace = config.shutdown_grace;
    server
}
