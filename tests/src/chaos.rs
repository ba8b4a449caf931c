//! A TCP proxy that can sever one service's link to RabbitMQ, Postgres or SMTP on demand,
//! without touching the real server that other tests share.
//!
//! Point the service under test at [`ChaosProxy::url_for`] instead of the real URL; then
//! [`ChaosProxy::cut`] breaks its connections (as a crashed server or a pulled cable would)
//! and [`ChaosProxy::restore`] lets it connect again.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::urls;

/// How long [`ChaosProxy::cut`] may take to see every connection closed.
const CUT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy's tasks are told: whether the link is cut, and how many times it was cut
/// (a connection dies when this count moves past the one it was accepted under).
#[derive(Debug, Clone, Copy)]
struct Control {
    cut: bool,
    generation: u64,
}

/// A TCP proxy listening on `127.0.0.1:<free port>` and forwarding every connection to an
/// upstream address, until told to cut.
///
/// While cut, it accepts new connections and closes them at once (the client sees the
/// connection reset or closed, not a timeout). Its tasks run on the Tokio runtime that
/// started it and stop, closing every connection, when the proxy is dropped.
pub struct ChaosProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    live: Arc<watch::Sender<usize>>,
}

impl ChaosProxy {
    /// Starts a proxy in front of `upstream`.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(upstream: SocketAddr) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("chaos proxy cannot bind a port: {error}"));
        let addr = listener.local_addr().expect("a bound listener has an address");
        let (control, watcher) = watch::channel(Control { cut: false, generation: 0 });
        let live = Arc::new(watch::Sender::new(0));
        tokio::spawn(accept_loop(listener, upstream, watcher, Arc::clone(&live)));
        ChaosProxy { addr, upstream, control, live }
    }

    /// Starts a proxy in front of the host and port of `url` (the scheme's usual port when it
    /// names none), e.g. `ChaosProxy::in_front_of(&amqp_url().await)`.
    ///
    /// # Panics
    /// When the URL's host does not resolve or no local port can be bound.
    pub async fn in_front_of(url: &str) -> ChaosProxy {
        ChaosProxy::start(urls::socket_addr(url).await).await
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `original_url` (amqp://, postgres://, smtp://, …) with its host and port replaced by
    /// the proxy's; credentials, path and query are kept.
    ///
    /// # Panics
    /// When `original_url` has no `scheme://`.
    pub fn url_for(&self, original_url: &str) -> String {
        urls::with_host_port(original_url, &self.addr.to_string())
    }

    /// Closes every live connection (both its sides) and makes the proxy refuse new ones
    /// until [`ChaosProxy::restore`]. When this returns, no connection is open any more.
    ///
    /// # Panics
    /// When the connections are not all closed within 10 s (a bug in the proxy).
    pub async fn cut(&self) {
        self.control.send_modify(|control| {
            control.cut = true;
            control.generation += 1;
        });
        let mut live = self.live.subscribe();
        let closed = tokio::time::timeout(CUT_TIMEOUT, live.wait_for(|count| *count == 0)).await;
        assert!(matches!(closed, Ok(Ok(_))), "chaos proxy: connections still open {CUT_TIMEOUT:?} after cut");
    }

    /// Lets new connections through again. Connections closed by [`ChaosProxy::cut`] stay
    /// closed: clients must reconnect.
    pub fn restore(&self) {
        self.control.send_modify(|control| control.cut = false);
    }

    /// Whether the proxy is currently cut.
    pub fn is_cut(&self) -> bool {
        self.control.borrow().cut
    }

    /// The number of client connections currently being forwarded.
    pub fn live_connections(&self) -> usize {
        *self.live.borrow()
    }
}

/// Accepts connections until the proxy is dropped (its control sender closes).
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    live: Arc<watch::Sender<usize>>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _peer)) = accepted else { continue };
                // Count first, then read the state: a cut that comes before the read refuses
                // this client; one that comes after is seen by the relay as a new
                // generation, and waits for it to close.
                let counted = LiveConnection::new(Arc::clone(&live));
                let mut watcher = control.clone();
                let state = *watcher.borrow_and_update();
                if state.cut {
                    drop(client);
                    drop(counted);
                    continue;
                }
                tokio::spawn(relay(counted, client, upstream, watcher, state.generation));
            }
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Forwards one connection until either side closes it, the proxy is cut past
/// `generation`, or the proxy is dropped; then closes both sides and stops counting it.
async fn relay(
    counted: LiveConnection,
    client: TcpStream,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    generation: u64,
) {
    tokio::select! {
        () = severed(control, generation) => {}
        () = forward(client, upstream) => {}
    }
    // Both sockets were dropped with the branches of the select; only now is it not live.
    drop(counted);
}

/// Copies bytes both ways between `client` and a new connection to `upstream`.
async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ended = copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Resolves when the proxy is cut past `generation` or dropped.
async fn severed(mut control: watch::Receiver<Control>, generation: u64) {
    loop {
        if control.changed().await.is_err() {
            return;
        }
        if control.borrow_and_update().generation != generation {
            return;
        }
    }
}

/// Counts one live connection for as long as it exists.
struct LiveConnection(Arc<watch::Sender<usize>>);

impl LiveConnection {
    fn new(live: Arc<watch::Sender<usize>>) -> Self {
        live.send_modify(|count| *count += 1);
        LiveConnection(live)
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}
