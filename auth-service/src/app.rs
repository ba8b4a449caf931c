//! Building and running the service: what `main` and the tests both call.
//!
//! [`App::build`] checks the token key, connects, migrates, binds, then starts the broker
//! client, the outbox relay, the rate limiter's cleaner and the HTTP server, and returns with
//! the bound address. When the shutdown token fires, [`App::run_until_stopped`] stops the
//! service in dependency order:
//! 1. the HTTP server stops accepting and finishes in-flight requests (the limiter's cleaner
//!    stops with it);
//! 2. the outbox relay drains once more (publishing what those requests wrote) and stops;
//! 3. the broker client disconnects;
//! 4. the pool closes.
//!
//! Every task is owned by the [`App`] and awaited there; dropping an `App` without running it
//! stops the relay and the client at once.

use std::{net::SocketAddr, sync::Arc};

use shared::{Client, ClientConfig, config::ConfigError, ops};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    config::{Config, SERVICE},
    db::{self, DatabaseError},
    password::{HashError, PasswordHasher},
    rate_limit::Limiter,
    relay::Relay,
    routes,
    state::AppState,
    token::Tokens,
};

/// A running service.
pub struct App {
    http_addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    limiter_cleaner: JoinHandle<()>,
    relay: JoinHandle<()>,
    client: Client,
    pool: PgPool,
    /// Cancelled after the HTTP server stopped (or when the `App` is dropped).
    relay_stop: DropGuard,
    /// Cancelled after the relay's last flush (or when the `App` is dropped).
    broker_stop: DropGuard,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration")]
    Config(#[source] ConfigError),
    #[error("cannot prepare the database")]
    Database(#[source] DatabaseError),
    #[error("cannot set up password hashing")]
    Hasher(#[source] HashError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl App {
    /// Starts the service; it runs until `shutdown` is cancelled. Fails only on what a
    /// restart cannot fix by waiting: no usable token key, database unreachable or
    /// unmigratable, bad argon2 parameters, port taken. The broker may be down: signups still
    /// work, `/readyz` says so.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<App, StartupError> {
        let key = config.jwt.key().map_err(StartupError::Config)?;
        if config.jwt.uses_dev_key() {
            tracing::warn!("signing tokens with the public development key (APP_ENV=dev, no JWT_SECRET)");
        }
        let pool = db::pool(&config.database).map_err(StartupError::Database)?;
        db::migrate(&pool, &shutdown).await.map_err(StartupError::Database)?;
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
        let relay = Relay::new(pool.clone(), client.clone(), config.outbox);
        let relay = tokio::spawn(relay.run(relay_stop.clone()));
        let limiter = Limiter::new(config.rate_limit);
        let limiter_cleaner = tokio::spawn(limiter.clone().clean_until(shutdown.clone()));

        let state = AppState {
            db: pool.clone(),
            rpc: client.clone(),
            hasher,
            tokens: Arc::new(Tokens::new(&key, config.jwt.jwt_ttl)),
        };
        let router = routes::router(state, readiness(&pool, &client), &limiter, config.body_limit);
        let server = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await
        });
        tracing::info!(%http_addr, "auth-service listening");
        Ok(App {
            http_addr,
            server,
            limiter_cleaner,
            relay,
            client,
            pool,
            relay_stop: relay_stop.drop_guard(),
            broker_stop: broker_stop.drop_guard(),
        })
    }

    /// Where the HTTP server listens (the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Waits for the shutdown token, then stops the service in order (see the module docs).
    pub async fn run_until_stopped(self) {
        let App { server, limiter_cleaner, relay, client, pool, relay_stop, broker_stop, .. } = self;
        match server.await {
            Ok(Ok(())) => tracing::info!("HTTP server stopped"),
            Ok(Err(error)) => tracing::error!(error = %error, "HTTP server failed"),
            Err(error) => tracing::error!(error = %error, "HTTP server task failed"),
        }
        drop(relay_stop);
        for (task, name) in [(limiter_cleaner, "rate limiter cleaner"), (relay, "outbox relay")] {
            if let Err(error) = task.await {
                tracing::error!(error = %error, task = name, "task failed");
            }
        }
        drop(broker_stop);
        client.closed().await;
        pool.close().await;
        tracing::info!(service = SERVICE.name, "stopped");
    }
}

fn start_client(config: &Config, stop: CancellationToken) -> Client {
    let client_config = ClientConfig::new(config.broker.broker_config(SERVICE.name))
        .queue(config.user_queue.clone())
        .events_exchange(config.broker.events_exchange.clone())
        .timeout(config.rpc_timeout);
    Client::start(client_config, stop)
}

fn readiness(pool: &PgPool, client: &Client) -> ops::Readiness {
    let pool = pool.clone();
    ops::Readiness::default()
        .check("database", move || {
            let pool = pool.clone();
            async move { db::ping(&pool).await }
        })
        .flag("broker", client.readiness())
}
