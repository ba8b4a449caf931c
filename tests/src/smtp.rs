//! An SMTP sink for tests of anything that sends mail: a real SMTP server, in this process, on
//! `127.0.0.1` (plain SMTP, AUTH optional), that records every message it accepts and can be
//! told to answer `4xx`/`5xx`, to cut the connection instead of answering, to answer slowly, or
//! to go away and come back on the same port.
//!
//! What it guarantees:
//! - a message is recorded before its `250` is sent: once a client's send returned `Ok`,
//!   [`SmtpSink::mails`] holds the message;
//! - a mode set with [`SmtpSink::set_mode`] applies from the next SMTP command on, on open
//!   connections too, and survives [`SmtpSink::restart`];
//! - after [`SmtpSink::stop`] returns, the port refuses connections and every connection that
//!   was open is closed; [`SmtpSink::restart`] listens on the same port again.
//!
//! The server runs on the Tokio runtime that started it and stops when the sink is dropped.

mod mail;
mod session;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket},
    sync::{oneshot, watch},
    task::{JoinError, JoinHandle, JoinSet},
    time::timeout,
};

pub use mail::ReceivedMail;

/// Pending connections the listener queues: enough for a benchmark's 64 senders connecting at
/// once.
const BACKLOG: u32 = 1024;

/// How the sink answers senders, set with [`SmtpSink::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpMode {
    /// Accept every message with `250` (the default), after the delay set with
    /// [`SmtpSink::set_accept_delay`] if any.
    #[default]
    Accept,
    /// Refuse recipients (and the end of `DATA`) with `451 4.3.0 try again later`: a transient
    /// failure.
    TempFail,
    /// Refuse recipients (and the end of `DATA`) with `550 5.1.1 mailbox unavailable`: a
    /// permanent failure.
    PermFail,
    /// Read the whole message, record it, then close the connection without answering: the
    /// link cut before the `250`. The sender cannot tell whether the message arrived; it did
    /// (it is in [`SmtpSink::mails`]), which is what a resend would duplicate.
    DropAfterData,
}

/// How the sessions answer, read afresh at every command.
#[derive(Debug, Clone, Copy, Default)]
struct Settings {
    mode: SmtpMode,
    accept_delay: Duration,
}

/// What the sink's sessions share with it; survives restarts.
#[derive(Default)]
struct State {
    settings: Mutex<Settings>,
    mails: Mutex<Vec<ReceivedMail>>,
    /// The number of messages recorded, for waiting without polling.
    count: watch::Sender<usize>,
}

impl State {
    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.settings.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn record(&self, mail: ReceivedMail) {
        let mut mails = self.mails.lock().unwrap_or_else(|e| e.into_inner());
        mails.push(mail);
        let count = mails.len();
        drop(mails);
        self.count.send_replace(count);
    }

    fn snapshot(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A local SMTP server that records what it receives (see the module docs).
pub struct SmtpSink {
    port: u16,
    state: Arc<State>,
    server: Option<Server>,
}

impl SmtpSink {
    /// Starts the sink on an ephemeral port, accepting everything.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start() -> SmtpSink {
        let listener = listen(0).unwrap_or_else(|error| panic!("SMTP sink cannot bind a port: {error}"));
        let port = listener.local_addr().expect("a bound listener has an address").port();
        let state = Arc::new(State::default());
        let server = Server::spawn(listener, Arc::clone(&state));
        SmtpSink { port, state, server: Some(server) }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The port the sink listens on (kept across [`SmtpSink::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how the sink answers, from the next SMTP command on (open connections
    /// included). The mode also applies after a restart.
    pub async fn set_mode(&mut self, mode: SmtpMode) {
        self.state.update(|settings| settings.mode = mode);
    }

    /// Makes [`SmtpMode::Accept`] wait `delay` between recording a message and sending its
    /// `250` (zero, the default, answers at once): a slow server, for timeout tests.
    pub fn set_accept_delay(&mut self, delay: Duration) {
        self.state.update(|settings| settings.accept_delay = delay);
    }

    /// Every message received so far (across restarts), oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.state.snapshot()
    }

    /// Waits until at least `n` messages were received in total and returns them all.
    ///
    /// # Panics
    /// When that does not happen within `deadline`.
    pub async fn wait_for_mails(&self, n: usize, deadline: Duration) -> Vec<ReceivedMail> {
        let mut count = self.state.count.subscribe();
        if timeout(deadline, count.wait_for(|received| *received >= n)).await.is_err() {
            let mails = self.state.snapshot();
            let recipients: Vec<&Vec<String>> = mails.iter().map(|mail| &mail.rcpt_to).collect();
            panic!(
                "SMTP sink received {} of {n} expected mails within {deadline:?} (mode {:?}); recipients so far: \
                 {recipients:?}",
                mails.len(),
                self.state.settings().mode,
            );
        }
        self.state.snapshot()
    }

    /// Stops the sink: once this returns, its port refuses connections and the connections
    /// that were open are closed, until [`SmtpSink::restart`]. Messages already accepted stay
    /// in [`SmtpSink::mails`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Starts the sink again on the same port (stopping it first if needed), in the mode last
    /// set, keeping the messages collected so far.
    ///
    /// # Panics
    /// When the port cannot be bound again (another process took it meanwhile).
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = listen(self.port)
            .unwrap_or_else(|error| panic!("SMTP sink cannot listen on port {} again: {error}", self.port));
        self.server = Some(Server::spawn(listener, Arc::clone(&self.state)));
    }
}

/// A listening socket on `127.0.0.1:port` (0: any free port). `SO_REUSEADDR` lets a restart
/// bind the port again while connections of the previous server linger in `TIME_WAIT`.
fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(BACKLOG)
}

/// The accept loop of one listening period, and the signal that ends it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    fn spawn(listener: TcpListener, state: Arc<State>) -> Server {
        let (stop, stopped) = oneshot::channel();
        Server { stop, task: tokio::spawn(serve(listener, state, stopped)) }
    }

    /// Ends the accept loop and waits until the listener and every connection are closed; a
    /// panic in the server surfaces here.
    async fn stop(self) {
        let _already_ended = self.stop.send(());
        if let Err(error) = self.task.await {
            rethrow_panic(error);
        }
    }
}

/// Accepts connections, one session task each, until `stop` fires or its sender is dropped
/// (the sink was dropped); then closes the listener and aborts every session.
async fn serve(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(ended) = sessions.join_next() => match ended {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "SMTP sink: a session ended with an error"),
                Err(error) => rethrow_panic(error),
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    sessions.spawn(session::converse(stream, Arc::clone(&state)));
                }
                Err(error) => tracing::warn!(%error, "SMTP sink: accept failed"),
            },
        }
    }
    drop(listener);
    sessions.shutdown().await;
}

/// Resumes the panic a task died of; a cancelled task is no failure.
fn rethrow_panic(error: JoinError) {
    if error.is_panic() {
        std::panic::resume_unwind(error.into_panic());
    }
}
