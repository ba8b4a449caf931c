//! Handling one delivery: decode, route, run the handler inside its span and trace, answer,
//! and ack only once everything the message needed is done.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Instant};

use futures::FutureExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};
use serde_json::{Value, value::RawValue};
use tracing::Instrument;

use super::{
    MessageContext, Outlet, Shared,
    handler::{InvalidPayload, Route},
    reply::ReplyTo,
};
use crate::{
    error::{EventFailure, FailureKind, RpcException, chain},
    retry::{ParkReason, Parking, RepublishError},
    trace,
    wire::{self, ErrorObject, Incoming},
};

/// Metric: messages handled, by queue, pattern, kind and outcome.
pub const MESSAGES_METRIC: &str = "transport_messages_total";
/// Metric: handler latency in seconds, by queue and pattern.
pub const DURATION_METRIC: &str = "transport_handler_duration_seconds";

pub(crate) async fn dispatch<S: Clone + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    outlet: Outlet,
    delivery: Delivery,
) {
    // Checked before anything reads the body: an oversized message is never decoded.
    if delivery.data.len() > shared.config.max_message_bytes {
        return reject_oversized(&outlet, &delivery, shared.config.max_message_bytes).await;
    }
    let incoming = match Incoming::parse(&delivery.data) {
        Ok(incoming) => incoming,
        Err(error) => return reject_undecodable(&outlet, &delivery, &error).await,
    };
    // A pattern sent exactly in its routing form (as our clients and NestJS send single-key
    // patterns) is found without parsing it; anything else is normalised first.
    let (pattern, known) = match shared.routes.get_key_value(incoming.pattern().get()) {
        Some((key, _)) => (key.clone(), true),
        None => {
            let key = incoming.route_key();
            let known = shared.routes.contains_key(&key);
            (key, known)
        }
    };
    let mut context =
        MessageContext::new(pattern, outlet.queue.to_string(), &delivery.properties, delivery.redelivered);
    let span = tracing::info_span!(
        "message",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        queue = %outlet.queue,
        pattern = %context.pattern,
        correlation_id = context.correlation_id.as_deref().unwrap_or(""),
        message_id = context.message_id.as_deref().unwrap_or(""),
        trace_id = %context.trace.trace_id(),
        attempt = context.attempt,
        redelivered = context.redelivered,
    );
    // Exported, the span is the child of the one that sent the message (a no-op otherwise).
    let request = matches!(incoming, Incoming::Request { .. });
    context.trace = trace::process_span(&span, &delivery, &outlet.queue, request, context.trace);
    let exported = trace::exporting().then(|| span.clone());
    // Unknown patterns are counted under one label so that junk cannot grow the metrics.
    let label = if known { context.pattern.clone() } else { "unknown".to_owned() };
    let started = Instant::now();
    let trace = context.trace;
    let (kind, outcome) = trace
        .scope(
            async {
                match incoming {
                    Incoming::Request { data, id, .. } => {
                        ("request", handle_request(&shared, &outlet, &delivery, context, data, &id).await)
                    }
                    Incoming::Event { data, .. } => {
                        ("event", handle_event(&shared, &outlet, &delivery, context, data).await)
                    }
                }
            }
            .instrument(span),
        )
        .await;
    if let Some(span) = exported
        && !matches!(outcome, "ok" | "rejected")
    {
        trace::set_error(&span, outcome);
    }
    metrics::counter!(MESSAGES_METRIC, "queue" => outlet.queue.to_string(), "pattern" => label.clone(), "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!(DURATION_METRIC, "queue" => outlet.queue.to_string(), "pattern" => label)
        .record(started.elapsed().as_secs_f64());
}

async fn handle_request<S: Clone + Send + Sync + 'static>(
    shared: &Shared<S>,
    outlet: &Outlet,
    delivery: &Delivery,
    context: MessageContext,
    data: Box<RawValue>,
    id: &str,
) -> &'static str {
    let attempts = context.attempt;
    // A poison request (a payload that is not its contract, a pattern nobody handles) is
    // answered and parked: the caller learns at once, the operator finds it in the DLQ.
    let mut poison = None;
    let (body, outcome) = match shared.routes.get(&context.pattern) {
        Some(Route::Request(handler)) => {
            let result = AssertUnwindSafe(handler(context, &shared.state, &data)).catch_unwind().await;
            match result {
                Ok(Ok(body)) => (body, "ok"),
                Ok(Err(exception)) => {
                    if let Some(invalid) = exception.source().filter(|source| source.is::<InvalidPayload>()) {
                        poison = Some((ParkReason::Permanent, chain(invalid)));
                    }
                    (error_body(&exception), log_exception(&exception))
                }
                Err(_) => {
                    tracing::error!("request handler panicked");
                    (error_body(&RpcException::value(internal_error())), "error")
                }
            }
        }
        _ => {
            tracing::warn!("no handler for this request pattern; parking it");
            poison = Some((ParkReason::NoHandler, "no request handler for this pattern".to_owned()));
            (wire::encode_no_handler(id), "no-handler")
        }
    };
    match ReplyTo::of(delivery, Some(id)) {
        Some(_) if redelivered_on_a_cluster(shared, delivery) => {
            tracing::warn!("redelivered request on a cluster: not answered (its caller's node may be gone)");
        }
        Some(reply_to) => reply_to.send(&outlet.channel, &body).await,
        None => tracing::warn!("request without reply_to: nobody to answer"),
    }
    match poison {
        Some((reason, error)) => {
            let parking = Parking { reason, error: &error, attempts };
            settle(outlet, outlet.failures.park(delivery, parking).await, delivery).await;
        }
        None => ack(&outlet.channel, delivery),
    }
    outcome
}

/// Whether a request came back after a lost consumer while the broker is a cluster. Its
/// reply is not sent: the caller's direct reply-to address may belong to a node that has just
/// left, and RabbitMQ 3.10 closes the whole connection of whoever publishes to such an address
/// (`rabbit_channel:deliver_reply` fails with `case_clause`), so answering would break this
/// server's link again on every redelivery. A caller on that node already failed with
/// `Unavailable`; one still waiting elsewhere times out.
fn redelivered_on_a_cluster<S>(shared: &Shared<S>, delivery: &Delivery) -> bool {
    let counted = delivery.properties.headers().as_ref().is_some_and(|headers| {
        headers
            .inner()
            .get(crate::retry::DELIVERY_COUNT_HEADER)
            .is_some_and(|count| super::amqp_to_json(count).as_u64().is_some_and(|count| count > 0))
    });
    shared.config.broker.urls.len() > 1 && (delivery.redelivered || counted)
}

fn error_body(exception: &RpcException) -> Vec<u8> {
    wire::encode_error(exception.error()).unwrap_or_default()
}

fn internal_error() -> Value {
    serde_json::to_value(ErrorObject::internal()).unwrap_or(Value::Null)
}

/// Logs a handler's error once, at the level its kind deserves; returns the outcome label.
fn log_exception(exception: &RpcException) -> &'static str {
    if exception.is_internal() {
        let cause = exception.source().map(|source| chain(source)).unwrap_or_default();
        tracing::error!(error = %cause, "request handler failed");
        "error"
    } else {
        // A status of 500 or more is our side failing (a database outage answered 503): worth a
        // warning; anything else is the caller's request refused, an ordinary outcome.
        let ours = exception.error().get("status").and_then(Value::as_u64).is_some_and(|status| status >= 500);
        match (exception.source(), ours) {
            (Some(source), true) => {
                tracing::warn!(err = %exception.error(), cause = %chain(source), "request answered with an error")
            }
            (Some(source), false) => {
                tracing::info!(err = %exception.error(), cause = %chain(source), "request answered with an error")
            }
            (None, true) => tracing::warn!(err = %exception.error(), "request answered with an error"),
            (None, false) => tracing::info!(err = %exception.error(), "request answered with an error"),
        }
        "rejected"
    }
}

async fn handle_event<S: Clone + Send + Sync + 'static>(
    shared: &Shared<S>,
    outlet: &Outlet,
    delivery: &Delivery,
    context: MessageContext,
    data: Box<RawValue>,
) -> &'static str {
    let attempts = context.attempt;
    let failure = match shared.routes.get(&context.pattern) {
        Some(Route::Event(handler)) => {
            match AssertUnwindSafe(handler(context, &shared.state, &data)).catch_unwind().await {
                Ok(Ok(())) => {
                    ack(&outlet.channel, delivery);
                    return "ok";
                }
                Ok(Err(failure)) => failure,
                Err(_) => EventFailure::transient(HandlerPanicked),
            }
        }
        _ => {
            let reason = "no event handler for this pattern";
            tracing::warn!(reason, "parking the event");
            let parking = Parking { reason: ParkReason::NoHandler, error: reason, attempts };
            settle(outlet, outlet.failures.park(delivery, parking).await, delivery).await;
            return "parked";
        }
    };
    let error = chain(failure.source());
    if failure.kind() == FailureKind::Transient && outlet.failures.retries_after(attempts) {
        let scheduled = outlet.failures.retry(delivery, attempts).await;
        if let Ok(delay) = &scheduled {
            tracing::warn!(error = %error, ?delay, "event handler failed; retrying later");
        }
        settle(outlet, scheduled.map(drop), delivery).await;
        return "retried";
    }
    let reason = if failure.kind() == FailureKind::Permanent { ParkReason::Permanent } else { ParkReason::Exhausted };
    tracing::error!(error = %error, ?reason, "event handler failed; parking the event");
    settle(outlet, outlet.failures.park(delivery, Parking { reason, error: &error, attempts }).await, delivery).await;
    "parked"
}

async fn reject_undecodable(outlet: &Outlet, delivery: &Delivery, error: &wire::PacketError) {
    let reason = chain(error);
    tracing::warn!(queue = %outlet.queue, error = %reason, "undecodable message; parking it");
    if let Some(reply_to) = ReplyTo::of(delivery, None) {
        // A caller may be waiting: tell it now rather than let it time out.
        let body =
            wire::encode_error(&ErrorObject::new(400, format!("undecodable message: {reason}"))).unwrap_or_default();
        reply_to.send(&outlet.channel, &body).await;
    }
    let parking = Parking { reason: ParkReason::Undecodable, error: &reason, attempts: 1 };
    settle(outlet, outlet.failures.park(delivery, parking).await, delivery).await;
    metrics::counter!(MESSAGES_METRIC, "queue" => outlet.queue.to_string(), "pattern" => "unknown", "kind" => "undecodable", "outcome" => "parked").increment(1);
}

async fn reject_oversized(outlet: &Outlet, delivery: &Delivery, max: usize) {
    let size = delivery.data.len();
    let reason = format!("message body of {size} bytes exceeds the limit of {max} bytes (MAX_MESSAGE_BYTES)");
    tracing::warn!(queue = %outlet.queue, size, max, "oversized message; parking it unread");
    if let Some(reply_to) = ReplyTo::of(delivery, None) {
        // A caller may be waiting: tell it now rather than let it time out.
        let body =
            wire::encode_error(&ErrorObject::new(413, format!("message too large: {reason}"))).unwrap_or_default();
        reply_to.send(&outlet.channel, &body).await;
    }
    let parking = Parking { reason: ParkReason::TooLarge, error: &reason, attempts: 1 };
    settle(outlet, outlet.failures.park(delivery, parking).await, delivery).await;
    metrics::counter!(MESSAGES_METRIC, "queue" => outlet.queue.to_string(), "pattern" => "unknown", "kind" => "oversized", "outcome" => "parked").increment(1);
}

/// Acks once the republish is confirmed; otherwise hands the message back to the broker
/// after a pause that grows while republishing keeps failing on this queue (a full DLQ
/// refuses every parking): the message is kept, and the consumer does not spin on it.
async fn settle(outlet: &Outlet, republished: Result<(), RepublishError>, delivery: &Delivery) {
    match republished {
        Ok(()) => ack(&outlet.channel, delivery),
        Err(error) => {
            let pause = outlet.failures.pause();
            tracing::error!(error = %chain(&error), ?pause, "could not republish a failed message; returning it to the queue after a pause");
            tokio::time::sleep(pause).await;
            let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
            if let Err(error) = delivery.acker.nack(options).await {
                tracing::debug!(error = %error, "nack failed; the broker redelivers on reconnect");
            }
        }
    }
}

/// Queues the ack on the consuming channel, behind whatever this handler published before
/// (its reply was written to the socket before this is called), without waiting for it to be
/// written: the frame goes out in order, and waiting would only cost the handler one more
/// wake-up from lapin's I/O thread (BENCH.md). `Channel::basic_ack` rather than the
/// delivery's `Acker`, which goes through lapin's internal RPC task first: one task hop less.
fn ack(channel: &lapin::Channel, delivery: &Delivery) {
    // The first poll checks the channel and queues the frame; what is left is the wait for the
    // write, which is dropped here.
    let queued = channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).now_or_never();
    if let Some(Err(error)) = queued {
        // The channel is gone: the broker redelivers the message to the next consumer.
        tracing::warn!(error = %error, "ack failed; the message will be redelivered");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the event handler panicked")]
struct HandlerPanicked;
