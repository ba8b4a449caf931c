//! Where the infrastructure is: the one place that decides which RabbitMQ and which Postgres
//! server every test of a process talks to.
//!
//! For each service, in this order:
//! 1. the URL in the environment (`TEST_AMQP_URL`, `TEST_DATABASE_URL`), which CI sets;
//! 2. otherwise, when a Docker daemon answers (found as testcontainers finds it: `DOCKER_HOST`,
//!    else the default, rootless and Docker Desktop sockets), a container started once per test
//!    process with testcontainers (image from `TEST_RABBITMQ_IMAGE` / `TEST_POSTGRES_IMAGE`),
//!    kept until the process ends and then removed;
//! 3. otherwise (no Docker, or Docker cannot start the image, e.g. on a machine that reaches
//!    no registry) the machine's own server at [`LOCAL_AMQP_URL`] / [`LOCAL_POSTGRES_URL`],
//!    announced by one line on stderr.
//!
//! The answer is computed once per process and per service; every later call returns the
//! same URL at once.

mod containers;
mod docker;
mod reaper;

use tokio::sync::OnceCell;

use crate::urls;

/// Environment variable naming the RabbitMQ to use, e.g. `amqp://guest:guest@rabbit:5672/%2f`.
pub const AMQP_URL_VAR: &str = "TEST_AMQP_URL";
/// Environment variable naming the Postgres server to use; a database name in it is ignored.
pub const DATABASE_URL_VAR: &str = "TEST_DATABASE_URL";
/// Environment variable overriding the RabbitMQ image (`name[:tag]`) used with Docker.
pub const RABBITMQ_IMAGE_VAR: &str = "TEST_RABBITMQ_IMAGE";
/// Environment variable overriding the Postgres image (`name[:tag]`, Postgres 13 or later)
/// used with Docker.
pub const POSTGRES_IMAGE_VAR: &str = "TEST_POSTGRES_IMAGE";
/// The RabbitMQ used when neither the environment nor Docker provides one.
pub const LOCAL_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The Postgres server used when neither the environment nor Docker provides one.
pub const LOCAL_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// The AMQP URL (with vhost) of the RabbitMQ shared by this test process.
///
/// The first call may start a container and waits until it accepts AMQP connections.
pub async fn amqp_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Some(url) = from_env(AMQP_URL_VAR) {
            return url;
        }
        let why = match docker::answers().await {
            Ok(()) => match containers::rabbitmq_url().await {
                Ok(url) => return url,
                Err(error) => error,
            },
            Err(why) => why,
        };
        eprintln!("test kit: {AMQP_URL_VAR} is not set and {why}; using the local RabbitMQ at {LOCAL_AMQP_URL}");
        LOCAL_AMQP_URL.to_owned()
    })
    .await
    .clone()
}

/// The URL of the Postgres server shared by this test process, without a database name
/// (e.g. `postgres://postgres@127.0.0.1:5432`); the user in it may create databases.
///
/// The first call may start a container and waits until it accepts connections. Use [`crate::TestDb`] for a database of your own.
pub async fn postgres_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Some(url) = from_env(DATABASE_URL_VAR) {
            return urls::with_path(&url, "");
        }
        let why = match docker::answers().await {
            Ok(()) => match containers::postgres_url().await {
                Ok(url) => return url,
                Err(error) => error,
            },
            Err(why) => why,
        };
        eprintln!(
            "test kit: {DATABASE_URL_VAR} is not set and {why}; using the local Postgres at {LOCAL_POSTGRES_URL}"
        );
        LOCAL_POSTGRES_URL.to_owned()
    })
    .await
    .clone()
}

/// The non-empty value of an environment variable.
fn from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|value| !value.trim().is_empty())
}
