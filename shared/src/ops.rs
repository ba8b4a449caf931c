//! The operations port every service mounts: `/healthz`, `/readyz`, `/metrics`,
//! `/asyncapi.json`.
//!
//! `/healthz` answers 200 while the process serves HTTP at all. `/readyz` runs every
//! registered check (each bounded by [`CHECK_TIMEOUT`]) and answers 200 only when all pass,
//! 503 otherwise, with the state of each in the JSON body. `/metrics` renders the
//! process-wide Prometheus registry. `/asyncapi.json` is the AsyncAPI 3.0 document of the
//! services' messaging ([`crate::asyncapi`]), the same on every service.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

/// A readiness check slower than this counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFuture = Pin<Box<dyn Future<Output = bool> + Send>>;
type Probe = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Probe)>,
}

impl Readiness {
    /// Adds a check; `probe` returns whether the dependency is usable now.
    pub fn check<F, Fut>(mut self, name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(probe()))));
        self
    }

    /// Adds a check that follows a readiness flag (a server's or a client's link).
    pub fn flag(self, name: &'static str, flag: tokio::sync::watch::Receiver<bool>) -> Self {
        self.check(name, move || {
            let up = *flag.borrow();
            async move { up }
        })
    }

    /// Runs every check; returns whether all passed and each one's state.
    pub async fn evaluate(&self) -> (bool, Map<String, Value>) {
        let results = futures::future::join_all(self.checks.iter().map(|(name, probe)| async move {
            let up = tokio::time::timeout(CHECK_TIMEOUT, probe()).await.unwrap_or(false);
            (*name, up)
        }))
        .await;
        let all = results.iter().all(|(_, up)| *up);
        let states = results
            .into_iter()
            .map(|(name, up)| (name.to_owned(), Value::from(if up { "up" } else { "down" })))
            .collect();
        (all, states)
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed: render an empty registry rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The ops router: `/healthz`, `/readyz`, `/metrics`, `/asyncapi.json`.
pub fn router(readiness: Readiness) -> Router {
    let handle = metrics();
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/asyncapi.json", get(|| async { Json(asyncapi_document()) }))
}

/// The AsyncAPI document, generated once per process.
fn asyncapi_document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(crate::asyncapi::document).clone()
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, checks) = readiness.evaluate().await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Which broker node each link is on (`host:port`, never credentials).
    let brokers = crate::connection::nodes_in_use();
    let status_text = if ready { "ready" } else { "unavailable" };
    (status, Json(serde_json::json!({"status": status_text, "checks": checks, "brokers": brokers})))
}

/// Binds `addr` and serves `router` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // With the peer address available to extractors (`ConnectInfo`), e.g. for rate limits.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::error!(error = %error, "ops server failed");
        }
    });
    Ok((bound, task))
}

/// The `healthcheck` subcommand of every binary: GET `/healthz` on the local port, for
/// container health checks on an image without curl. `bound` is the address the service
/// binds; a wildcard one (`0.0.0.0`, `::`) is reached over loopback. Returns whether it
/// answered 200.
pub async fn healthcheck(bound: SocketAddr) -> bool {
    let addr = probe_addr(bound);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, probe).await, Ok(Ok(true)))
}

/// Where to connect to reach a port bound on `bound`: a wildcard bind is not an address to
/// connect to, its loopback counterpart is.
fn probe_addr(mut bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        bound.set_ip(match bound {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_names_the_broker_node_of_each_link_and_no_credentials() {
        let name = format!("readyz-{}", rand::random::<u64>());
        let _link = crate::connection::InUse::register(&name, "rabbit-2:5672");
        let response = readyz(State(Readiness::default())).await.into_response();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let brokers = body["brokers"].as_array().unwrap();
        assert!(brokers.contains(&serde_json::json!({"connection": name, "node": "rabbit-2:5672"})), "{body}");
    }

    #[test]
    fn wildcard_binds_are_probed_over_loopback() {
        let probe = |addr: &str| probe_addr(addr.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(probe("[::]:9090"), "[::1]:9090");
        assert_eq!(probe("10.0.0.7:3000"), "10.0.0.7:3000");
    }
}
