//! `mq` against the real broker and the real services: the AsyncAPI document (committed copy,
//! official parser, served on the ops port), send/emit against user-service, the DLQ replay
//! of a real parked `user.created`, and the topology check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod asyncapi;
mod dlq;
mod messaging;
mod support;
mod topology;
