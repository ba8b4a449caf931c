//! A stand-in user-service on the real broker: a `shared::Server` answering `get_user` on
//! the test's queue from a map, like the real one (400 for a malformed id, 404 when unknown).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use shared::{
    BrokerConfig, CancellationToken, Listener, MessageContext, RetryPolicy, RpcException, Server, ServerConfig, State,
    TraceContext,
    contracts::{GetUser, User},
};
use uuid::Uuid;

/// An id the stub answers only after [`SLOW_REPLY`] (for timeout tests).
pub const SLOW_ID: &str = "00000000-0000-4000-8000-00000000510e";
pub const SLOW_REPLY: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Directory {
    users: Arc<Mutex<HashMap<Uuid, User>>>,
    /// The trace context of every request received.
    traces: Arc<Mutex<Vec<TraceContext>>>,
}

impl Directory {
    pub fn add(&self, user: User) {
        self.users.lock().unwrap().insert(user.id, user);
    }

    /// Adds a user from an auth-service signup response body.
    pub fn add_json(&self, body: &serde_json::Value) {
        self.add(serde_json::from_value(body.clone()).unwrap());
    }

    pub fn traces(&self) -> Vec<TraceContext> {
        self.traces.lock().unwrap().clone()
    }
}

pub fn user(id: Uuid, email: &str, name: &str) -> User {
    let created_at = DateTime::parse_from_rfc3339("2024-01-01T00:07:00.123Z").unwrap().with_timezone(&Utc);
    User { id, email: email.to_owned(), name: name.to_owned(), created_at }
}

async fn get_user(
    State(directory): State<Directory>,
    ctx: MessageContext,
    request: GetUser,
) -> Result<User, RpcException> {
    directory.traces.lock().unwrap().push(ctx.trace);
    if request.id == SLOW_ID {
        tokio::time::sleep(SLOW_REPLY).await;
    }
    let id = Uuid::parse_str(&request.id).map_err(|_| RpcException::status(400, "invalid user id"))?;
    let user = directory.users.lock().unwrap().get(&id).cloned();
    user.ok_or_else(|| RpcException::status(404, "user not found"))
}

/// A running stub; stops when dropped.
pub struct UserServiceStub {
    pub directory: Directory,
    stop: CancellationToken,
}

impl UserServiceStub {
    /// Serves `get_user` on `queue`; returns once it consumes.
    pub async fn start(broker_url: &str, queue: &str) -> UserServiceStub {
        Self::start_with(broker_url, queue, true).await
    }

    /// A server on `queue` with no handler at all: every request gets NestJS's "no matching
    /// message handler" reply.
    pub async fn start_without_handlers(broker_url: &str, queue: &str) -> UserServiceStub {
        Self::start_with(broker_url, queue, false).await
    }

    async fn start_with(broker_url: &str, queue: &str, handlers: bool) -> UserServiceStub {
        let directory = Directory::default();
        let stop = CancellationToken::new();
        let mut config =
            ServerConfig::new(BrokerConfig::new(broker_url, "auth-test-user-service"), "auth-test-user-service");
        config.shutdown_grace = Duration::from_millis(100);
        // Requests are never retried: with one attempt the server declares no delay queues,
        // only the dead-letter queue the test env deletes with the user queue.
        config.retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
        let mut server = Server::new(directory.clone());
        if handlers {
            server = server.request(get_user);
        }
        let handle = server.listen(Listener::queue(queue)).start(config, stop.clone());
        assert!(handle.wait_ready(Duration::from_secs(10)).await, "the stub user-service consumes");
        UserServiceStub { directory, stop }
    }
}

impl Drop for UserServiceStub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
