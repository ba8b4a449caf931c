//! `emit`: a persistent event, confirmed by the broker (NestJS `client.emit`).

use lapin::{BasicProperties, Confirmation, options::BasicPublishOptions, types::FieldTable};
use serde::Serialize;
use serde_json::Value;

use super::{Client, EmitOptions, EmitTarget};
use crate::{
    contracts::{Event, pattern_value},
    error::EmitError,
    trace::{Messaging, SpanKind, TraceContext},
    wire::{self, EventPacket},
};

impl Client {
    /// Emits a typed event to the configured events exchange, routing key = its pattern.
    pub async fn emit<E: Event>(&self, event: &E) -> Result<(), EmitError> {
        self.emit_with(event, EmitOptions::default()).await
    }

    /// [`Client::emit`] with per-call options (target, event id, trace).
    pub async fn emit_with<E: Event>(&self, event: &E, options: EmitOptions) -> Result<(), EmitError> {
        self.emit_data(&pattern_value(E::PATTERN), event, options).await
    }

    /// The untyped event path: `data` is any JSON, e.g. a `Value`, or stored JSON text as a
    /// `RawValue` (sent byte for byte). Returns once the broker confirmed the persistent message.
    pub async fn emit_raw<T: Serialize + ?Sized>(
        &self,
        pattern: &Value,
        data: &T,
        options: EmitOptions,
    ) -> Result<(), EmitError> {
        self.emit_data(pattern, data, options).await
    }

    /// Publishes the event packet and waits for the broker's confirm, within
    /// `confirm_timeout`.
    async fn emit_data<T: Serialize + ?Sized>(
        &self,
        pattern: &Value,
        data: &T,
        options: EmitOptions,
    ) -> Result<(), EmitError> {
        let config = &self.inner.config;
        let body = serde_json::to_vec(&EventPacket { pattern, data }).map_err(EmitError::Encode)?;
        let target = options
            .target
            .or_else(|| config.events_exchange.clone().map(EmitTarget::Exchange))
            .unwrap_or_else(|| EmitTarget::Queue(config.queue.clone().unwrap_or_default()));
        let (exchange, routing_key, mandatory) = match &target {
            EmitTarget::Exchange(exchange) => (exchange.as_str(), wire::route_key(pattern), false),
            EmitTarget::Queue(queue) => ("", queue.clone(), true),
        };
        let message_id = options.message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut headers = FieldTable::default();
        // Exported, the publish has a producer span of its own (the child of `options.trace`
        // when given: an outbox row's), ended with the confirm, and the event carries its
        // context; otherwise `options.trace` or a child of the current one.
        let messaging = Messaging {
            message_id: Some(&message_id),
            body_size: Some(body.len()),
            ..Messaging::send(exchange, &routing_key)
        };
        let span = messaging.send_span(SpanKind::Producer);
        TraceContext::start_span(&span, options.trace)
            .or(options.trace)
            .unwrap_or_else(TraceContext::outgoing)
            .inject(&mut headers);
        let properties =
            BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into()).with_headers(headers);

        // While failing over to another node, the emit waits for it within its deadline.
        let deadline = tokio::time::Instant::now() + config.confirm_timeout;
        let link = self
            .inner
            .link
            .get_or_failover(deadline)
            .await
            .ok_or(EmitError::Unavailable { reason: "not connected", source: None })?;
        let channel = link.events.channel();
        let publish_options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
        let confirmed = async {
            channel
                .basic_publish(exchange.into(), routing_key.as_str().into(), publish_options, &body, properties)
                .await
                .map_err(|source| EmitError::Unavailable { reason: "publish failed", source: Some(source) })?
                .await
                .map_err(|source| EmitError::Unavailable { reason: "no confirm", source: Some(source) })
        };
        // A confirm never arrives from a node that went away: the emit fails when its link is
        // given up, not at the deadline, so that the caller (the outbox relay) publishes again
        // through the next node at once.
        let confirmed = async {
            tokio::select! {
                confirm = confirmed => confirm,
                () = link.lost.cancelled() => Err(EmitError::Unavailable { reason: "connection lost", source: None }),
            }
        };
        let confirm = tokio::time::timeout_at(deadline, confirmed)
            .await
            .map_err(|_| EmitError::Unavailable { reason: "no confirm in time", source: None })
            .flatten()
            .inspect_err(|_| {
                // The broker closed the events channel alone: the whole link is rebuilt.
                if !channel.status().connected() {
                    self.inner.link.request_relink();
                }
            })?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(EmitError::Unroutable { target: routing_key }),
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                // The next attempt goes out on a fresh channel (see `link::EventsChannel`).
                if let Err(error) = link.events.renew(&channel).await {
                    tracing::debug!(error = %error, "no fresh events channel; rebuilding the link");
                    self.inner.link.request_relink();
                }
                Err(EmitError::Nacked)
            }
        }
    }
}
