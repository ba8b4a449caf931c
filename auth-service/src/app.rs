//! Building and running the service: what `main` and the tests both call.
//!
//! [`App::build`] checks the token key, connects, migrates, binds both ports, then starts the
//! broker client, the outbox relay, the limiters' cleaner, the HTTP server and the operations
//! server, and returns with the bound addresses. When the shutdown token fires,
//! [`App::run_until_stopped`] stops the service in dependency order:
//! 1. the HTTP server stops accepting and finishes in-flight requests, for at most
//!    `SHUTDOWN_GRACE_MS` (each is bounded by `REQUEST_TIMEOUT_MS` anyway); the cleaner and
//!    the operations port stop with it;
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
    login_throttle::LoginThrottle,
    overload::Limits,
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
    ops_addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    ops: JoinHandle<()>,
    shutdown: CancellationToken,
    shutdown_grace: std::time::Duration,
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
        let hash_queue = config.overload.hash_queue_capacity.resolve(config.hash_concurrency);
        let hasher = PasswordHasher::new(config.argon2, config.hash_concurrency, hash_queue)
            .await
            .map_err(StartupError::Hasher)?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.http_addr, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| StartupError::Bind { addr: config.http_addr, source })?;
        let ops_listener = TcpListener::bind(config.ops.ops_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.ops.ops_addr, source })?;
        let ops_addr =
            ops_listener.local_addr().map_err(|source| StartupError::Bind { addr: config.ops.ops_addr, source })?;

        // From here on nothing fails: every task started below is stopped by the sequence.
        let broker_stop = CancellationToken::new();
        let client = start_client(&config, broker_stop.clone());
        let relay_stop = CancellationToken::new();
        let relay = Relay::new(pool.clone(), client.clone(), config.outbox);
        let relay = tokio::spawn(relay.run(relay_stop.clone()));
        let limiter = Limiter::new(config.rate_limit);
        let throttle = LoginThrottle::new(config.login_throttle);
        let limiter_cleaner = tokio::spawn({
            let (limiter, throttle, stop) = (limiter.clone(), throttle.clone(), shutdown.clone());
            async move {
                tokio::join!(limiter.clean_until(stop.clone()), throttle.clean_until(stop));
            }
        });

        let state = AppState {
            db: pool.clone(),
            rpc: client.clone(),
            hasher,
            tokens: Arc::new(Tokens::new(&key, config.jwt.jwt_ttl, &config.jwt.jwt_issuer, &config.jwt.jwt_audience)),
            throttle,
        };
        let router = routes::router(state, &limiter, Limits::new(&config.overload), config.body_limit);
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await
            }
        });
        let ops_router = ops::router(readiness(&pool, &client));
        let ops_stop = shutdown.clone();
        let ops = tokio::spawn(async move {
            let served = axum::serve(ops_listener, ops_router).with_graceful_shutdown(ops_stop.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(error = %error, "ops server failed");
            }
        });
        tracing::info!(%http_addr, %ops_addr, hash_queue_capacity = hash_queue, "auth-service listening");
        Ok(App {
            http_addr,
            ops_addr,
            server,
            ops,
            shutdown: shutdown.clone(),
            shutdown_grace: config.ops.shutdown_grace,
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

    /// Where `/healthz`, `/readyz` and `/metrics` are served (the real port when configured
    /// with port 0).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Waits for the shutdown token, then stops the service in order (see the module docs).
    pub async fn run_until_stopped(self) {
        let App {
            server,
            ops,
            shutdown,
            shutdown_grace,
            limiter_cleaner,
            relay,
            client,
            pool,
            relay_stop,
            broker_stop,
            ..
        } = self;
        stop_http(server, &shutdown, shutdown_grace).await;
        drop(relay_stop);
        for (task, name) in [(limiter_cleaner, "limiters' cleaner"), (ops, "ops server"), (relay, "outbox relay")] {
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

/// Waits for the HTTP server: until it ends by itself, or at most `grace` after `shutdown`
/// (then the requests still running are cancelled).
async fn stop_http(
    mut server: JoinHandle<std::io::Result<()>>,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) {
    let ended = tokio::select! {
        ended = &mut server => Some(ended),
        () = shutdown.cancelled() => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => match tokio::time::timeout(grace, &mut server).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!(?grace, "HTTP requests still running after the grace period; cancelled");
                server.abort();
                return;
            }
        },
    };
    match ended {
        Ok(Ok(())) => tracing::info!("HTTP server stopped"),
        Ok(Err(error)) => tracing::error!(error = %error, "HTTP server failed"),
        Err(error) => tracing::error!(error = %error, "HTTP server task failed"),
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
