//! The events this process is sending right now, so that a second delivery of one of them (a
//! duplicate publish, or a redelivery after the broker link broke while the first is still
//! recording) waits for the first instead of racing it, and so that a claim this process left
//! behind is known to be harmless or not.
//!
//! The database claim ([`crate::sent_mails`]) cannot tell this process's running attempts from
//! its finished ones (they carry the same owner id); this registry can, without a database
//! round trip.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use crate::event_id::EventId;

/// What this process knows about an event it is not sending right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// An attempt is running.
    Running,
    /// An attempt was interrupted (aborted at shutdown, or panicked) between its first SMTP
    /// command and its record: the SMTP server may have accepted it.
    Unsure,
}

/// The registry; one per process, shared by every handler.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<EventId, Slot>>);

impl InFlight {
    /// Marks `event_id` as being sent by the caller, or `None` when another attempt of this
    /// process is already running for it.
    pub fn enter(&self, event_id: &EventId) -> Option<Attempt<'_>> {
        let mut slots = self.slots();
        let earlier_unsure = match slots.get(event_id) {
            Some(Slot::Running) => return None,
            Some(Slot::Unsure) => true,
            None => false,
        };
        slots.insert(event_id.clone(), Slot::Running);
        Some(Attempt { registry: self, event_id: event_id.clone(), earlier_unsure, talking_to_smtp: false })
    }

    /// How many events are being sent right now.
    pub fn len(&self) -> usize {
        self.slots().values().filter(|slot| **slot == Slot::Running).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Slot>> {
        // A panic while the lock was held cannot leave the map half-updated (single inserts
        // and removals), so a poisoned lock is still a usable one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One running attempt, registered until dropped.
///
/// Guarantee: dropped between [`Attempt::talking_to_smtp`] and [`Attempt::settled`] (the
/// handler was aborted or panicked mid-send), it leaves the event marked unsure, so that this
/// process treats its own claim as the ambiguous case; dropped otherwise, it leaves nothing.
#[derive(Debug)]
pub struct Attempt<'a> {
    registry: &'a InFlight,
    event_id: EventId,
    earlier_unsure: bool,
    talking_to_smtp: bool,
}

impl Attempt<'_> {
    /// Whether an earlier attempt of this process was interrupted mid-send.
    pub fn earlier_unsure(&self) -> bool {
        self.earlier_unsure
    }

    /// The SMTP conversation begins: from now on an interruption leaves the outcome unknown.
    pub fn talking_to_smtp(&mut self) {
        self.talking_to_smtp = true;
    }

    /// The outcome is known: the mail was not accepted, or it was recorded as sent.
    pub fn settled(&mut self) {
        self.talking_to_smtp = false;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut slots = self.registry.slots();
        if self.talking_to_smtp {
            slots.insert(self.event_id.clone(), Slot::Unsure);
        } else {
            slots.remove(&self.event_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn event() -> EventId {
        let created = shared::contracts::UserCreated {
            id: Uuid::new_v4(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            created_at: chrono::DateTime::default(),
        };
        EventId::derived(&created).unwrap()
    }

    #[test]
    fn a_running_event_cannot_be_entered_twice() {
        let registry = InFlight::default();
        let id = event();
        let first = registry.enter(&id).unwrap();
        assert!(registry.enter(&id).is_none());
        assert_eq!(registry.len(), 1);
        assert!(!registry.is_empty());
        drop(first);
        assert!(registry.enter(&id).is_some_and(|again| !again.earlier_unsure()));
        assert!(registry.is_empty());
    }

    #[test]
    fn an_attempt_dropped_mid_send_leaves_the_event_unsure_until_the_next_one_settles() {
        let registry = InFlight::default();
        let id = event();
        let mut first = registry.enter(&id).unwrap();
        first.talking_to_smtp();
        drop(first);
        assert!(registry.is_empty(), "an unsure event is not one being sent");
        let mut second = registry.enter(&id).unwrap();
        assert!(second.earlier_unsure());
        second.talking_to_smtp();
        second.settled();
        drop(second);
        assert!(!registry.enter(&id).unwrap().earlier_unsure());
    }
}
