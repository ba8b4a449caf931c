//! Whether a Docker daemon answers, asked once per process through testcontainers' own client.
//!
//! The client is the one testcontainers starts containers with, so the daemon pinged is the
//! daemon that would be used: `DOCKER_HOST` (with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`), else
//! `/var/run/docker.sock`, else the rootless and Docker Desktop sockets
//! (`$XDG_RUNTIME_DIR/.docker/run/docker.sock`, `~/.docker/run/docker.sock`,
//! `~/.docker/desktop/docker.sock`). testcontainers does not read the Docker CLI's contexts:
//! with a non-default context, export its endpoint, e.g.
//! `DOCKER_HOST=$(docker context inspect -f '{{.Endpoints.docker.Host}}')`.

use std::time::Duration;

use testcontainers::{bollard::Docker, core::client::docker_client_instance};
use tokio::sync::OnceCell;

/// How long the daemon may take to answer the ping.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when the daemon testcontainers would use answers a ping, else why not. Decided on the
/// first call; later calls return the same answer.
pub(super) async fn answers() -> Result<(), String> {
    static ANSWER: OnceCell<Result<(), String>> = OnceCell::const_new();
    ANSWER
        .get_or_init(|| async {
            let docker = docker_client_instance()
                .await
                .map_err(|error| format!("no Docker client can be configured ({error})"))?;
            ping(&docker, PING_TIMEOUT).await
        })
        .await
        .clone()
}

/// Pings the daemon behind `docker`, giving up after `within`.
async fn ping(docker: &Docker, within: Duration) -> Result<(), String> {
    match tokio::time::timeout(within, docker.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("no Docker daemon answers ({error})")),
        Err(_) => Err(format!("no Docker daemon answers within {within:?}")),
    }
}

#[cfg(test)]
mod tests {
    use testcontainers::bollard::API_DEFAULT_VERSION;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::UnixListener,
    };

    use super::*;

    /// A stand-in for the daemon's socket that answers every connection with `reply`, or
    /// never answers when `reply` is `None`. Returns a client for it.
    fn fake_daemon(reply: Option<&'static [u8]>) -> Docker {
        let path = std::env::temp_dir().join(crate::unique("fake_docker")).with_extension("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let docker = Docker::connect_with_unix(&path.display().to_string(), 5, API_DEFAULT_VERSION).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _removed = std::fs::remove_file(&path);
            let mut request = [0u8; 1024];
            let _read = stream.read(&mut request).await;
            match reply {
                Some(reply) => {
                    let _written = stream.write_all(reply).await;
                }
                // Hold the connection open without a word until the test ends.
                None => std::future::pending::<()>().await,
            }
        });
        docker
    }

    #[tokio::test]
    async fn a_daemon_that_answers_ok_counts() {
        let docker = fake_daemon(Some(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK"));
        assert_eq!(ping(&docker, PING_TIMEOUT).await, Ok(()));
    }

    #[tokio::test]
    async fn an_error_status_a_hang_up_or_a_silent_daemon_does_not_count() {
        let failing = fake_daemon(Some(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"));
        assert!(ping(&failing, PING_TIMEOUT).await.is_err());
        let silent = fake_daemon(None);
        let error = ping(&silent, Duration::from_millis(200)).await.unwrap_err();
        assert!(error.contains("within 200ms"), "{error}");
        let hangs_up = fake_daemon(Some(b""));
        assert!(ping(&hangs_up, PING_TIMEOUT).await.is_err());
    }
}
