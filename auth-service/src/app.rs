//! Building and running the service: what `main` and the tests both call.
//!
//! [`App::build`] connects, migrates, binds, starts the broker client, the outbox relay and
//! the HTTP server, and returns the bound address. When the shutdown token fires the service
//! stops in dependency order:
//! 1. the HTTP server stops accepting and finishes in-flight requests;
//! 2. the outbox relay drains once more (publishing what those requests wrote) and stops;
//! 3. the broker client disconnects;
//! 4. the pool closes.
//!
//! [`App::stopped`] resolves when all of that is done.

use std::{net::SocketAddr, sync::Arc};

use secrecy::ExposeSecret;
use shared::{BrokerConfig, Client, ClientConfig, ops};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    db,
    password::{HashError, PasswordHasher},
    rate_limit::Limiter,
    relay::{self, Relay},
    routes,
    state::AppState,
    token::Tokens,
};

/// The broker connection's name, as RabbitMQ shows it.
const CONNECTION_NAME: &str = "auth-service";

/// A running service.
pub struct App {
    http_addr: SocketAddr,
    stopped: JoinHandle<()>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot connect to the database")]
    Database(#[source] sqlx::Error),
    #[error("cannot migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot set up password hashing")]
    Hasher(#[source] HashError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The tasks that stop in order after the HTTP server.
struct Background {
    pool: PgPool,
    relay: JoinHandle<()>,
    listener: JoinHandle<()>,
    relay_stop: CancellationToken,
    broker_stop: CancellationToken,
}

impl App {
    /// Starts the service; it runs until `shutdown` is cancelled. Fails only on what a
    /// restart cannot fix by waiting: database unreachable or unmigratable, bad argon2
    /// parameters, port taken. The broker may be down: signups still work, `readyz` says so.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<App, StartupError> {
        let pool =
            db::connect(&config.database_url, config.db_max_connections).await.map_err(StartupError::Database)?;
        db::migrate(&pool).await.map_err(StartupError::Migrate)?;
        let hasher = PasswordHasher::new(config.argon2, config.hash_concurrency).await.map_err(StartupError::Hasher)?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.http_addr, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| StartupError::Bind { addr: config.http_addr, source })?;

        // From here on nothing fails: every task started below is stopped by the sequence.
        let broker_stop = CancellationToken::new();
        let client = start_client(&config, broker_stop.clone());
        let relay_stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let relay = Relay::new(
            pool.clone(),
            client.clone(),
            wake.clone(),
            config.outbox.batch_size,
            config.outbox.poll_interval,
        );
        let background = Background {
            pool: pool.clone(),
            relay: tokio::spawn(relay.run(relay_stop.clone())),
            // The relay wakes on the outbox NOTIFY, which Postgres delivers at commit to every
            // instance's listener; a second, in-process wake per signup would only make the
            // relay scan again for a row it has already published.
            listener: tokio::spawn(relay::listen(pool.clone(), wake, relay_stop.clone())),
            relay_stop,
            broker_stop,
        };
        let limiter = Limiter::new(config.rate_limit);
        tokio::spawn(limiter.clone().clean_until(shutdown.clone()));

        let readiness = readiness(&pool, &client);
        let state = AppState {
            db: pool,
            rpc: client,
            hasher,
            tokens: Arc::new(Tokens::new(&config.jwt_secret, config.jwt_ttl)),
        };
        let router = routes::router(state, readiness, &limiter, config.body_limit);
        let server = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await
        });
        tracing::info!(%http_addr, "auth-service listening");
        let stopped = tokio::spawn(stop_in_order(server, background));
        Ok(App { http_addr, stopped })
    }

    /// Where the HTTP server listens (the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Resolves once the service has shut down (see the module docs for the order).
    pub async fn stopped(self) {
        if let Err(error) = self.stopped.await {
            tracing::error!(error = %error, "shutdown sequence failed");
        }
    }
}

fn start_client(config: &Config, stop: CancellationToken) -> Client {
    let mut broker = BrokerConfig::new(config.amqp_url.expose_secret(), CONNECTION_NAME);
    broker.reconnect.max = config.amqp_reconnect_max;
    let client_config = ClientConfig::new(broker)
        .queue(config.user_queue.clone())
        .events_exchange(config.events_exchange.clone())
        .timeout(config.rpc_timeout);
    Client::start(client_config, stop)
}

fn readiness(pool: &PgPool, client: &Client) -> ops::Readiness {
    let pool = pool.clone();
    let client = client.clone();
    ops::Readiness::default()
        .check("database", move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.is_ok() }
        })
        .check("broker", move || std::future::ready(client.is_connected()))
}

async fn stop_in_order(server: JoinHandle<std::io::Result<()>>, background: Background) {
    match server.await {
        Ok(Ok(())) => tracing::info!("HTTP server stopped"),
        Ok(Err(error)) => tracing::error!(error = %error, "HTTP server failed"),
        Err(error) => tracing::error!(error = %error, "HTTP server task failed"),
    }
    background.relay_stop.cancel();
    for (name, task) in [("outbox relay", background.relay), ("outbox listener", background.listener)] {
        if let Err(error) = task.await {
            tracing::error!(error = %error, task = name, "task failed");
        }
    }
    background.broker_stop.cancel();
    background.pool.close().await;
    tracing::info!("auth-service stopped");
}
