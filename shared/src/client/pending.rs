//! The calls waiting for a reply, and how a reply finds its caller.
//!
//! A correlation id is the client's random prefix and a call number: unique for the client's
//! whole life, so a late reply can never be taken for a newer call's, and another client's
//! reply (same reply-to pseudo-queue name, other connection) can never match.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use lapin::message::Delivery;
use serde_json::{Value, value::RawValue};
use tokio::sync::oneshot;

use crate::{error::DecodeError, wire::Reply};

/// How a call ended, short of a typed reply: the caller turns it into an `RpcError`.
pub(super) enum CallError {
    /// The handler answered `{"err": …}`.
    Remote(Value),
    /// The server has no handler for the pattern.
    NoHandler,
    /// The reply is not a NestJS reply packet.
    Decode(DecodeError),
    /// The link broke, or the client stopped, before the reply came.
    Lost(Option<lapin::Error>),
}

/// The reply's `response` as raw JSON, decoded by the caller straight into its type.
pub(super) type Outcome = Result<Box<RawValue>, CallError>;

/// The table of calls in flight, by call number.
pub(super) struct PendingCalls {
    table: Mutex<HashMap<u64, Entry>>,
    id_prefix: String,
    next_call: AtomicU64,
}

struct Entry {
    reply: oneshot::Sender<Outcome>,
    /// The latest item of a streamed reply; the stream's value once it is disposed.
    last: Option<Box<RawValue>>,
}

/// One registered call. Dropping it forgets the call, whatever happened, so a late reply
/// finds nothing to complete.
pub(super) struct Call<'a> {
    /// The correlation id (and the packet `id`) to send the request with.
    pub id: String,
    /// Resolves with the call's outcome (await it through `&mut`: the call must stay alive).
    pub outcome: oneshot::Receiver<Outcome>,
    _forget: Forget<'a>,
}

struct Forget<'a> {
    calls: &'a PendingCalls,
    number: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.calls.table().remove(&self.number);
    }
}

impl PendingCalls {
    pub fn new() -> Self {
        Self {
            table: Mutex::default(),
            id_prefix: format!("{:016x}-", rand::random::<u64>()),
            next_call: AtomicU64::new(1),
        }
    }

    /// Registers a new call: it waits for the reply carrying its correlation id.
    pub fn register(&self) -> Call<'_> {
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (reply, outcome) = oneshot::channel();
        self.table().insert(number, Entry { reply, last: None });
        Call { id: self.correlation_id(number), outcome, _forget: Forget { calls: self, number } }
    }

    /// Completes the call a reply belongs to; replies nobody waits for are dropped.
    pub fn deliver(&self, delivery: &Delivery) {
        let Some(correlation_id) = delivery.properties.correlation_id().as_ref() else {
            tracing::debug!("dropped a reply without correlation id");
            return;
        };
        let Some(number) = self.call_number(correlation_id.as_str()) else {
            tracing::debug!(correlation_id = %correlation_id, "dropped a reply to an unknown correlation id");
            return;
        };
        // Parsed before taking the lock: the lock is shared by every concurrent caller.
        let reply = Reply::parse_raw(&delivery.data);
        let mut table = self.table();
        let Some(entry) = table.get_mut(&number) else {
            tracing::debug!(correlation_id = %correlation_id, "dropped a late or unknown reply");
            return;
        };
        let outcome = match reply {
            Ok(Reply::Partial(value)) => {
                entry.last = Some(value);
                return;
            }
            Ok(Reply::Success(value)) => Ok(value),
            Ok(Reply::Disposed) => Ok(entry.last.take().unwrap_or_else(|| RawValue::NULL.to_owned())),
            // Already checked to be JSON by the parser, so reading it as a value cannot fail.
            Ok(Reply::Error(error)) => Err(CallError::Remote(serde_json::from_str(error.get()).unwrap_or(Value::Null))),
            Ok(Reply::NoHandler { .. }) => Err(CallError::NoHandler),
            Err(error) => Err(CallError::Decode(error.into())),
        };
        if let Some(entry) = table.remove(&number) {
            // The caller may have given up in the meantime; nothing to do then.
            let _ = entry.reply.send(outcome);
        }
    }

    /// Fails every call in flight: the link they were waiting on is gone.
    pub fn fail_all(&self, source: Option<&lapin::Error>) {
        for (_, entry) in self.table().drain() {
            let _ = entry.reply.send(Err(CallError::Lost(source.cloned())));
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn correlation_id(&self, number: u64) -> String {
        format!("{}{number:x}", self.id_prefix)
    }

    /// The call number a correlation id names, if it is one of this client's.
    fn call_number(&self, correlation_id: &str) -> Option<u64> {
        let number = correlation_id.strip_prefix(self.id_prefix.as_str())?;
        u64::from_str_radix(number, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_unique_and_only_this_clients_parse_back() {
        let (one, other) = (PendingCalls::new(), PendingCalls::new());
        let ids: Vec<String> = (1..=1000).map(|call| one.correlation_id(call)).collect();
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
        for (call, id) in (1..=1000).zip(&ids) {
            assert_eq!(one.call_number(id), Some(call));
            assert_eq!(other.call_number(id), None, "another client's id must not match");
        }
        for junk in ["", "abc", &format!("{}zz", one.id_prefix), &format!("{}{}", one.id_prefix, "1".repeat(40))] {
            assert_eq!(one.call_number(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_call_is_forgotten_once_its_caller_lets_go() {
        let calls = PendingCalls::new();
        let call = calls.register();
        assert!(call.id.starts_with(&calls.id_prefix));
        assert_eq!(calls.table().len(), 1);
        drop(call);
        assert!(calls.table().is_empty(), "a dropped call must not linger for a late reply");
    }

    #[test]
    fn losing_the_link_fails_every_call_in_flight() {
        let calls = PendingCalls::new();
        let (mut first, mut second) = (calls.register(), calls.register());
        calls.fail_all(None);
        assert!(matches!(first.outcome.try_recv(), Ok(Err(CallError::Lost(None)))));
        assert!(matches!(second.outcome.try_recv(), Ok(Err(CallError::Lost(None)))));
        assert!(calls.table().is_empty());
    }
}
