//! The RabbitMQ and Postgres containers, started at most once per test process.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};
use testcontainers::{ContainerAsync, Image, ImageExt, core::WaitFor, runners::AsyncRunner};
use testcontainers_modules::{postgres::Postgres, rabbitmq::RabbitMq};
use tokio::sync::OnceCell;

use super::{POSTGRES_IMAGE_VAR, RABBITMQ_IMAGE_VAR, from_env, reaper};
use crate::{eventually, urls};

/// RabbitMQ image used unless `TEST_RABBITMQ_IMAGE` says otherwise.
const DEFAULT_RABBITMQ_IMAGE: &str = "rabbitmq:3.13-alpine";
/// Postgres image used unless `TEST_POSTGRES_IMAGE` says otherwise.
const DEFAULT_POSTGRES_IMAGE: &str = "postgres:16-alpine";
/// How long a container may take to log that it is ready (pulling comes before this).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a started container may take to accept its first client connection.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A started container and the URL that reaches it; never dropped.
struct Running<I: Image> {
    url: String,
    _container: ContainerAsync<I>,
}

/// Starts (once) a RabbitMQ container and returns its AMQP URL once it accepts connections,
/// or why it could not be started (e.g. the image cannot be pulled).
pub(super) async fn rabbitmq_url() -> Result<String, String> {
    static RABBITMQ: OnceCell<Result<Running<RabbitMq>, String>> = OnceCell::const_new();
    let running = RABBITMQ
        .get_or_init(|| async {
            let (name, tag) = image_ref(RABBITMQ_IMAGE_VAR, DEFAULT_RABBITMQ_IMAGE);
            let container = RabbitMq::default()
                .with_name(name)
                .with_tag(tag)
                // The module's own condition counts the management image's plugins; any
                // RabbitMQ image logs this line once it listens.
                .with_ready_conditions(vec![WaitFor::message_on_stdout("Server startup complete")])
                .with_startup_timeout(STARTUP_TIMEOUT)
                .start()
                .await
                .map_err(|error| format!("cannot start a RabbitMQ container: {error}"))?;
            reaper::remove_at_exit(container.id());
            let host = container.get_host().await.expect("RabbitMQ container host");
            let port = container.get_host_port_ipv4(5672).await.expect("RabbitMQ port");
            let url = format!("amqp://guest:guest@{host}:{port}/%2f");
            eventually(ACCEPT_TIMEOUT, || async {
                let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
                connection.close(200, "ready".into()).await
            })
            .await;
            Ok(Running { url, _container: container })
        })
        .await;
    running.as_ref().map(|running| running.url.clone()).map_err(Clone::clone)
}

/// Starts (once) a Postgres container and returns its server URL (no database name) once it
/// accepts connections, or why it could not be started.
pub(super) async fn postgres_url() -> Result<String, String> {
    static POSTGRES: OnceCell<Result<Running<Postgres>, String>> = OnceCell::const_new();
    let running = POSTGRES
        .get_or_init(|| async {
            let (name, tag) = image_ref(POSTGRES_IMAGE_VAR, DEFAULT_POSTGRES_IMAGE);
            let container = Postgres::default()
                .with_host_auth()
                .with_name(name)
                .with_tag(tag)
                .with_startup_timeout(STARTUP_TIMEOUT)
                .start()
                .await
                .map_err(|error| format!("cannot start a Postgres container: {error}"))?;
            reaper::remove_at_exit(container.id());
            let host = container.get_host().await.expect("Postgres container host");
            let port = container.get_host_port_ipv4(5432).await.expect("Postgres port");
            let url = format!("postgres://postgres:postgres@{host}:{port}");
            let maintenance = urls::with_path(&url, "postgres");
            eventually(ACCEPT_TIMEOUT, || async { PgConnection::connect(&maintenance).await?.close().await }).await;
            Ok(Running { url, _container: container })
        })
        .await;
    running.as_ref().map(|running| running.url.clone()).map_err(Clone::clone)
}

/// The image named by `var`, else `default`, split into name and tag (`latest` if none).
fn image_ref(var: &str, default: &str) -> (String, String) {
    let image = from_env(var).unwrap_or_else(|| default.to_owned());
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image, "latest".to_owned()),
    }
}
