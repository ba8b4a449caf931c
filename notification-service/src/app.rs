//! Startup: the database (migrated), the SMTP transport, the consumer and the ops port,
//! built from a [`Config`] and run until the shutdown token fires.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use lettre::message::Mailbox;
use secrecy::ExposeSecret;
use shared::{BrokerConfig, CancellationToken, Listener, Server, ServerConfig, ServerHandle, ops};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::task::JoinHandle;

use crate::{Config, event_id::MessageIdDomain, mailer::Mailer, welcome_mail};

/// The name in broker connections, dead-letter headers (`x-service`) and logs.
pub const SERVICE_NAME: &str = "notification-service";
/// How long a mail may wait for a database connection before it is retried later.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler call shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    pool: PgPool,
    mailer: Mailer,
    mail_from: Mailbox,
    message_id_domain: MessageIdDomain,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    pub fn mail_from(&self) -> &Mailbox {
        &self.0.mail_from
    }

    pub fn message_id_domain(&self) -> &MessageIdDomain {
        &self.0.message_id_domain
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot connect to the database")]
    Database(#[source] sqlx::Error),
    #[error("cannot migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("SMTP_URL is not usable")]
    SmtpUrl(#[source] lettre::transport::smtp::Error),
    #[error("cannot listen on the ops address {addr}")]
    Ops { addr: SocketAddr, source: std::io::Error },
}

/// The running service: consuming `user.created`, serving the ops port.
///
/// Guarantees: [`App::build`] returns only once the database is migrated and the ops port is
/// bound (the bound address is in [`App::ops_addr`], so tests can use port 0); consuming
/// starts in the background and reconnects by itself ([`App::wait_ready`] waits for it).
/// After the shutdown token fires, [`App::run_until_stopped`] returns once in-flight mails
/// finished (bounded by `SHUTDOWN_GRACE_MS`) and every connection is closed.
pub struct App {
    ops_addr: SocketAddr,
    server: ServerHandle,
    ops: JoinHandle<()>,
    state: AppState,
}

impl App {
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<App, BuildError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(config.database_url.expose_secret())
            .await
            .map_err(BuildError::Database)?;
        sqlx::migrate!().run(&pool).await.map_err(BuildError::Migrate)?;
        let mailer = Mailer::new(config.smtp_url.expose_secret(), config.smtp_timeout, u32::from(config.prefetch))
            .map_err(BuildError::SmtpUrl)?;
        let state = AppState(Arc::new(Shared {
            pool,
            mailer,
            mail_from: config.mail_from.clone(),
            message_id_domain: config.message_id_domain.clone(),
        }));

        // A child token, so that a failure below stops the consumer started here.
        let stop = shutdown.child_token();
        let server = Server::new(state.clone())
            .event(welcome_mail::on_user_created)
            .listen(Listener::queue(&config.notification_queue).bind_events(&config.events_exchange))
            .start(server_config(&config), stop.clone());
        let router = ops::router(readiness(&state, &server));
        let (ops_addr, ops) = match ops::serve(config.ops_addr, router, stop.clone()).await {
            Ok(bound) => bound,
            Err(source) => {
                stop.cancel();
                server.stopped().await;
                return Err(BuildError::Ops { addr: config.ops_addr, source });
            }
        };
        tracing::info!(%ops_addr, queue = %config.notification_queue, "notification-service started");
        Ok(App { ops_addr, server, ops, state })
    }

    /// The address `/healthz`, `/readyz` and `/metrics` are served on.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Waits until the queue is being consumed, up to `deadline`; returns whether it is.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        self.server.wait_ready(deadline).await
    }

    /// The database pool (for tests and tools that inspect `sent_mails`).
    pub fn pool(&self) -> &PgPool {
        self.state.pool()
    }

    /// Runs until the shutdown token fires and everything has wound down.
    pub async fn run_until_stopped(self) {
        self.server.stopped().await;
        if let Err(error) = self.ops.await {
            tracing::error!(error = %error, "ops server task failed");
        }
        self.state.mailer().shutdown().await;
        self.state.pool().close().await;
        tracing::info!("notification-service stopped");
    }
}

fn server_config(config: &Config) -> ServerConfig {
    let broker = BrokerConfig::new(config.amqp_url.expose_secret(), SERVICE_NAME);
    let mut server = ServerConfig::new(broker, SERVICE_NAME);
    server.prefetch = config.prefetch;
    server.retry = config.retry.clone();
    server.shutdown_grace = config.shutdown_grace;
    server
}

/// `/readyz`: the database answers, the queue is consumed, the SMTP server answers NOOP.
fn readiness(state: &AppState, server: &ServerHandle) -> ops::Readiness {
    let pool = state.pool().clone();
    let mailer = state.mailer().clone();
    ops::Readiness::default()
        .check("database", move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.is_ok() }
        })
        .flag("broker", server.readiness())
        .check("smtp", move || {
            let mailer = mailer.clone();
            async move { mailer.is_reachable().await }
        })
}
