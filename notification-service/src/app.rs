//! Startup: the database (migrated), the SMTP transport, the consumer and the ops port, built
//! from a [`Config`] and run until the shutdown token fires.

use std::{net::SocketAddr, time::Duration};

use secrecy::ExposeSecret;
use shared::{
    CancellationToken, Listener, Server, ServerConfig, ServerHandle, config::ConfigError, ops, startup::ServiceConfig,
};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    config::{Config, SERVICE},
    db::{self, DatabaseError},
    mailer::Mailer,
    sent_mails::SentMails,
    state::{AppState, Parts},
    welcome_mail,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration")]
    Config(#[source] ConfigError),
    #[error("the database is not usable")]
    Database(#[source] DatabaseError),
    #[error("SMTP_URL is not usable")]
    SmtpUrl(#[source] lettre::transport::smtp::Error),
    #[error("cannot listen on the ops address {addr}")]
    Ops {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<App, StartupError> {
        // The binary and `Config::from_lookup` check this already; a config built or changed
        // field by field (tests, tools) gets the same check here.
        ServiceConfig::validate(&config).map_err(StartupError::Config)?;
        warn_if_lease_outlives_retries(&config);
        let pool = db::pool(&config.database).map_err(StartupError::Database)?;
        db::migrate(&pool, &shutdown).await.map_err(StartupError::Database)?;
        let mailer = Mailer::new(
            config.smtp_url.expose_secret(),
            config.smtp_timeout,
            u32::from(config.consumer.prefetch.get()),
        )
        .map_err(StartupError::SmtpUrl)?
        .send_deadline(config.send_deadline());

        // A child token, so that a failure below stops the consumer started here.
        let stop = shutdown.child_token();
        let sent_mails =
            SentMails::new(pool, config.claim_lease, config.ambiguous_send, config.database.database_timeout);
        let owner = sent_mails.owner();
        let state = AppState::new(Parts {
            sent_mails,
            mailer,
            mail_from: config.mail_from.clone(),
            message_id_domain: config.message_id_domain.clone(),
            stopping: stop.clone(),
            // Half the grace: the rest is for the ack and the consumer's own winding down.
            record_grace: config.ops.shutdown_grace / 2,
        });
        let server = Server::new(state.clone())
            .event(welcome_mail::on_user_created)
            .listen(Listener::queue(&config.notification_queue).bind_events(&config.broker.events_exchange))
            .start(server_config(&config), stop.clone());
        let router = ops::router(readiness(&state, &server));
        let (ops_addr, ops) = match ops::serve(config.ops.ops_addr, router, stop.clone()).await {
            Ok(bound) => bound,
            Err(source) => {
                stop.cancel();
                server.stopped().await;
                return Err(StartupError::Ops { addr: config.ops.ops_addr, source });
            }
        };
        tracing::info!(%ops_addr, queue = %config.notification_queue, instance = %owner, "notification-service started");
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

    /// This process's id in `sent_mails.owner`.
    pub fn instance_id(&self) -> uuid::Uuid {
        self.state.sent_mails().owner()
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
    let mut server = ServerConfig::new(config.broker.broker_config(SERVICE.name), SERVICE.name);
    config.consumer.apply(&mut server);
    server.retry = config.retry.policy();
    server.shutdown_grace = config.ops.shutdown_grace;
    server
}

/// After a crash, the restarted service finds the crashed run's claims younger than the lease
/// and retries their events through the delay queues until the lease is over; retries that run
/// out first park those events instead of resending them.
fn warn_if_lease_outlives_retries(config: &Config) {
    let policy = config.retry.policy();
    let budget: Duration = (1..policy.max_attempts).map(|attempt| policy.delay_after(attempt)).sum();
    if config.claim_lease >= budget {
        tracing::warn!(
            claim_lease_ms = config.claim_lease.as_millis(),
            retry_budget_ms = budget.as_millis(),
            "CLAIM_LEASE_MS is not shorter than the retry schedule: events claimed by a crashed instance may be parked before their claim expires"
        );
    }
}

/// `/readyz`: the database answers, the queue is consumed, the SMTP server answers NOOP.
fn readiness(state: &AppState, server: &ServerHandle) -> ops::Readiness {
    let pool = state.pool().clone();
    let mailer = state.mailer().clone();
    ops::Readiness::default()
        .check("database", move || {
            let pool = pool.clone();
            async move { sqlx::query!("SELECT 1 AS one").fetch_one(&pool).await.is_ok() }
        })
        .flag("broker", server.readiness())
        .check("smtp", move || {
            let mailer = mailer.clone();
            async move { mailer.is_reachable().await }
        })
}
