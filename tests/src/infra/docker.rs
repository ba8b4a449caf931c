//! Whether a Docker daemon answers, asked once per process with a `/_ping`.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    sync::OnceCell,
};

/// How long the daemon may take to answer the ping.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Where the daemon listens when `DOCKER_HOST` is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// True when the daemon named by `DOCKER_HOST` (or the default socket) answers a ping.
/// Decided on the first call; later calls return the same answer.
pub(super) async fn answers() -> bool {
    static ANSWERS: OnceCell<bool> = OnceCell::const_new();
    *ANSWERS
        .get_or_init(|| async {
            let host = std::env::var("DOCKER_HOST")
                .ok()
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_owned());
            tokio::time::timeout(PING_TIMEOUT, ping(&host)).await.unwrap_or(false)
        })
        .await
}

/// Pings the daemon at `host` (`unix://path` or `tcp://host:port`). Over TLS (when
/// `DOCKER_TLS_VERIFY` is set) an accepted TCP connection counts as an answer.
async fn ping(host: &str) -> bool {
    if let Some(path) = host.strip_prefix("unix://") {
        match UnixStream::connect(path).await {
            Ok(stream) => http_ping(stream).await,
            Err(_) => false,
        }
    } else if let Some(address) = host.strip_prefix("tcp://") {
        let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|value| !value.is_empty());
        match TcpStream::connect(address.trim_end_matches('/')).await {
            Ok(_) if tls => true,
            Ok(stream) => http_ping(stream).await,
            Err(_) => false,
        }
    } else {
        false
    }
}

/// Sends `GET /_ping` and checks for a `200` status line.
async fn http_ping<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> bool {
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let mut filled = 0;
    while filled < reply.len() {
        match stream.read(&mut reply[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(read) => filled += read,
        }
        if reply[..filled].contains(&b'\n') {
            break;
        }
    }
    let status_line = String::from_utf8_lossy(&reply[..filled]);
    let mut words = status_line.split_whitespace();
    words.next().is_some_and(|version| version.starts_with("HTTP/")) && words.next() == Some("200")
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A one-shot stand-in for the daemon's socket that answers with `reply` (the socket
    /// file is removed once a client has connected).
    fn fake_daemon(reply: &'static [u8]) -> String {
        let path = std::env::temp_dir().join(crate::unique("fake_docker")).with_extension("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let address = format!("unix://{}", path.display());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _removed = std::fs::remove_file(&path);
            let mut request = [0u8; 256];
            let _read = stream.read(&mut request).await;
            let _written = stream.write_all(reply).await;
        });
        address
    }

    #[tokio::test]
    async fn a_daemon_that_answers_200_counts() {
        assert!(ping(&fake_daemon(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")).await);
    }

    #[tokio::test]
    async fn an_error_status_or_no_socket_does_not_count() {
        assert!(!ping(&fake_daemon(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")).await);
        assert!(!ping("unix:///nonexistent/docker.sock").await);
        assert!(!ping("npipe:////./pipe/docker_engine").await);
    }
}
