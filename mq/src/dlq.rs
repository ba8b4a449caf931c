//! `mq dlq`: the parked messages of a dead-letter queue (`<queue>.dlq`, headers set by
//! `shared::retry`), listed, shown, replayed or purged.
//!
//! Reading is non-destructive: messages are taken with `basic.get` without acking and handed
//! back in their order (`basic.nack`, requeue) once read. Replaying is at-least-once: each
//! message is re-published on a publisher-confirm channel, and its parked copy is acked only
//! after the broker confirmed the copy; if `mq` dies in between, the message is in both places
//! (consumers deduplicate by `message_id`), never in neither.

use lapin::{
    BasicProperties, Channel, Confirmation,
    message::Delivery,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::{Map, Value, json};
use shared::{
    asyncapi::amqp_json, config::BrokerSettings, connection::Connected, contracts::pattern_value, retry, topology, wire,
};

use crate::{error::MqError, outcome::Outcome};

/// Headers a replay removes: the park record and the attempt count (the consumer then starts
/// at attempt 1).
const RESET_HEADERS: [&str; 7] = [
    retry::FAILURE_HEADER,
    retry::ERROR_HEADER,
    retry::ATTEMPTS_HEADER,
    retry::SERVICE_HEADER,
    retry::PARKED_AT_HEADER,
    retry::ATTEMPT_HEADER,
    retry::DELIVERY_COUNT_HEADER,
];
/// Header a replay adds: when (JavaScript `toISOString()` form).
pub const REPLAYED_AT_HEADER: &str = "x-replayed-at";

/// The dead-letter queue meant: a name ending in `.dlq` as it is, any other queue's `.dlq`.
pub fn dlq_of(queue: &str) -> String {
    if queue.ends_with(".dlq") { queue.to_owned() } else { topology::dlq_name(queue) }
}

/// The queue a dead-letter queue belongs to.
fn owner_of(dlq: &str) -> &str {
    dlq.strip_suffix(".dlq").unwrap_or(dlq)
}

/// A connection and a channel, and the dead-letter queue's message count.
struct Session {
    connected: Connected,
    channel: Channel,
    dlq: String,
    count: u32,
}

impl Session {
    async fn open(broker: &BrokerSettings, queue: &str) -> Result<Self, MqError> {
        let dlq = dlq_of(queue);
        let connected = shared::connection::connect(&broker.broker_config("mq")).await?;
        let channel = connected.connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel.queue_declare(dlq.as_str().into(), passive, FieldTable::default()).await;
        let count = match declared {
            Ok(declared) => declared.message_count(),
            Err(_) => return Err(MqError::NoQueue(dlq)),
        };
        Ok(Self { connected, channel, dlq, count })
    }

    /// Takes the next message without acking it.
    async fn get(&self) -> Result<Option<Delivery>, MqError> {
        let options = BasicGetOptions { no_ack: false };
        let got = self.channel.basic_get(self.dlq.as_str().into(), options).await;
        Ok(got.map_err(MqError::broker(format!("reading {}", self.dlq)))?.map(|message| message.delivery))
    }

    /// Hands every message taken and not acked back to the queue, in its order.
    async fn requeue_up_to(&self, last: Option<u64>) -> Result<(), MqError> {
        if let Some(tag) = last {
            let options = BasicNackOptions { multiple: true, requeue: true };
            self.channel.basic_nack(tag, options).await.map_err(MqError::broker("handing messages back"))?;
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connected.connection.close(200, "done".into()).await;
    }
}

fn header(delivery: &Delivery, name: &str) -> Value {
    delivery.properties.headers().as_ref().and_then(|headers| headers.inner().get(name)).map_or(Value::Null, amqp_json)
}

fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    header(delivery, name).as_str().map(str::to_owned)
}

/// The packet's pattern, or none for an undecodable body.
fn pattern_of(delivery: &Delivery) -> Option<Value> {
    let packet: Value = serde_json::from_slice(&delivery.data).ok()?;
    packet.get("pattern").cloned()
}

/// One parked message, summarised.
fn summary(position: usize, delivery: &Delivery) -> Value {
    json!({
        "n": position,
        "pattern": pattern_of(delivery),
        "failure": header(delivery, retry::FAILURE_HEADER),
        "error": header(delivery, retry::ERROR_HEADER),
        "attempts": header(delivery, retry::ATTEMPTS_HEADER),
        "service": header(delivery, retry::SERVICE_HEADER),
        "parkedAt": header(delivery, retry::PARKED_AT_HEADER),
        "size": delivery.data.len(),
        "messageId": delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
    })
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

pub async fn list(broker: &BrokerSettings, queue: &str, limit: Option<usize>) -> Result<Outcome, MqError> {
    let session = Session::open(broker, queue).await?;
    let wanted = limit.unwrap_or(usize::MAX).min(usize::try_from(session.count).unwrap_or(usize::MAX));
    let mut messages = Vec::new();
    let mut last = None;
    while messages.len() < wanted {
        let Some(delivery) = session.get().await? else { break };
        last = Some(delivery.delivery_tag);
        messages.push(summary(messages.len() + 1, &delivery));
    }
    session.requeue_up_to(last).await?;
    let (dlq, count) = (session.dlq.clone(), session.count);
    session.close().await;
    let mut text = format!("{dlq}: {count} message{}\n", if count == 1 { "" } else { "s" });
    if !messages.is_empty() {
        text.push_str(&format!(
            "{:>3}  {:<20} {:<11} {:>8}  {:<22} {:<24} {:>6}  {}\n",
            "N", "PATTERN", "FAILURE", "ATTEMPTS", "SERVICE", "PARKED AT", "SIZE", "ERROR"
        ));
    }
    for message in &messages {
        text.push_str(&format!(
            "{:>3}  {:<20} {:<11} {:>8}  {:<22} {:<24} {:>6}  {}\n",
            cell(&message["n"]),
            cell(&message["pattern"]),
            cell(&message["failure"]),
            cell(&message["attempts"]),
            cell(&message["service"]),
            cell(&message["parkedAt"]),
            cell(&message["size"]),
            cell(&message["error"]),
        ));
    }
    Ok(Outcome::ok(json!({"queue": dlq, "count": count, "messages": messages}), text))
}

pub async fn show(broker: &BrokerSettings, queue: &str, n: usize) -> Result<Outcome, MqError> {
    if n == 0 {
        return Err(MqError::Usage("N counts from 1 (the oldest parked message)".to_owned()));
    }
    let session = Session::open(broker, queue).await?;
    let mut found = None;
    let mut last = None;
    for _ in 0..n {
        let Some(delivery) = session.get().await? else { break };
        last = Some(delivery.delivery_tag);
        found = Some(delivery);
    }
    session.requeue_up_to(last).await?;
    let (dlq, count) = (session.dlq.clone(), session.count);
    session.close().await;
    let Some(delivery) = found.filter(|_| usize::try_from(count).is_ok_and(|count| n <= count)) else {
        let text = format!("{dlq} holds {count} messages: there is no message {n}");
        return Ok(Outcome::failed(json!({"queue": dlq, "count": count, "error": text}), text));
    };
    let shown = full(&delivery);
    let text = format!("{dlq}: message {n} of {count}\n{}\n", serde_json::to_string_pretty(&shown).unwrap_or_default());
    Ok(Outcome::ok(json!({"queue": dlq, "count": count, "n": n, "message": shown}), text))
}

/// A message in full: properties, headers and body (JSON when it is JSON, else text).
fn full(delivery: &Delivery) -> Value {
    let properties = &delivery.properties;
    let headers = properties.headers().as_ref().map_or(Value::Object(Map::new()), |headers| {
        Value::Object(headers.inner().iter().map(|(key, value)| (key.as_str().to_owned(), amqp_json(value))).collect())
    });
    let body = serde_json::from_slice::<Value>(&delivery.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned()));
    let short = |value: &Option<lapin::types::ShortString>| value.as_ref().map(|text| text.as_str().to_owned());
    json!({
        "properties": {
            "messageId": short(properties.message_id()),
            "correlationId": short(properties.correlation_id()),
            "replyTo": short(properties.reply_to()),
            "contentType": short(properties.content_type()),
            "deliveryMode": properties.delivery_mode(),
            "timestamp": properties.timestamp(),
        },
        "headers": headers,
        "size": delivery.data.len(),
        "body": body,
    })
}

/// The copy a replay publishes: the same body and properties, the park record and attempt
/// count removed, `x-replayed-at` added.
fn replay_properties(delivery: &Delivery) -> BasicProperties {
    let mut table = delivery.properties.headers().as_ref().map(|headers| headers.inner().clone()).unwrap_or_default();
    for name in RESET_HEADERS {
        table.remove(name);
    }
    let now = wire::js_date::format(&chrono::Utc::now());
    table.insert(REPLAYED_AT_HEADER.into(), AMQPValue::LongString(now.into()));
    delivery.properties.clone().with_headers(FieldTable::from(table))
}

/// Where a replay goes: the original exchange and routing key from the park headers, or the
/// owning queue (`to_queue`, or a message without them).
fn destination(delivery: &Delivery, dlq: &str, to_queue: bool) -> (String, String) {
    let original = (
        text_header(delivery, retry::ORIGINAL_EXCHANGE_HEADER),
        text_header(delivery, retry::ORIGINAL_ROUTING_KEY_HEADER),
    );
    match original {
        (Some(exchange), Some(routing_key)) if !to_queue => (exchange, routing_key),
        _ => (String::new(), owner_of(dlq).to_owned()),
    }
}

pub async fn replay(
    broker: &BrokerSettings,
    queue: &str,
    limit: Option<usize>,
    pattern: Option<&str>,
    to_queue: bool,
) -> Result<Outcome, MqError> {
    let session = Session::open(broker, queue).await?;
    let confirms = session.connected.connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
    confirms.confirm_select(ConfirmSelectOptions::default()).await.map_err(MqError::broker("enabling confirms"))?;
    let wanted = pattern.map(|pattern| wire::route_key(&pattern_value(pattern)));
    let limit = limit.unwrap_or(usize::MAX);
    let mut replayed = Vec::new();
    let mut failed = Vec::new();
    let mut kept_last = None;
    // Only the messages parked when the replay began: a replayed message that fails again and
    // is parked anew is not replayed a second time by the same run.
    for position in 1..=session.count {
        if replayed.len() >= limit {
            break;
        }
        let Some(delivery) = session.get().await? else { break };
        let matches =
            wanted.as_ref().is_none_or(|wanted| pattern_of(&delivery).is_some_and(|p| wire::route_key(&p) == *wanted));
        if !matches {
            kept_last = Some(delivery.delivery_tag);
            continue;
        }
        let (exchange, routing_key) = destination(&delivery, &session.dlq, to_queue);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let published = confirms
            .basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                options,
                &delivery.data,
                replay_properties(&delivery),
            )
            .await
            .map_err(MqError::broker("publishing a replay"))?
            .await
            .map_err(MqError::broker("waiting for the broker's confirm"))?;
        let mut record = summary(usize::try_from(position).unwrap_or(usize::MAX), &delivery);
        record["exchange"] = json!(exchange);
        record["routingKey"] = json!(routing_key);
        match published {
            Confirmation::Ack(None) => {
                session
                    .channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(MqError::broker("removing a replayed message's parked copy"))?;
                replayed.push(record);
            }
            Confirmation::Ack(Some(_)) => {
                record["reason"] = json!("unroutable: no queue is bound for it");
                kept_last = Some(delivery.delivery_tag);
                failed.push(record);
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                record["reason"] = json!("the broker refused the copy");
                kept_last = Some(delivery.delivery_tag);
                failed.push(record);
            }
        }
    }
    session.requeue_up_to(kept_last).await?;
    let dlq = session.dlq.clone();
    let _ = confirms.close(200, "done".into()).await;
    session.close().await;
    let mut text = format!("{dlq}: replayed {}", replayed.len());
    for record in &replayed {
        let target = if cell(&record["exchange"]).is_empty() { "\"\"".to_owned() } else { cell(&record["exchange"]) };
        text.push_str(&format!(
            "\n  {} {} -> exchange {target} routing key {}",
            cell(&record["n"]),
            cell(&record["pattern"]),
            cell(&record["routingKey"])
        ));
    }
    for record in &failed {
        text.push_str(&format!(
            "\n  not replayed: {} {}: {}",
            cell(&record["n"]),
            cell(&record["pattern"]),
            cell(&record["reason"])
        ));
    }
    let json = json!({"queue": dlq, "replayed": replayed, "failed": failed});
    Ok(if failed.is_empty() { Outcome::ok(json, text) } else { Outcome::failed(json, text) })
}

pub async fn purge(broker: &BrokerSettings, queue: &str, yes: bool) -> Result<Outcome, MqError> {
    let session = Session::open(broker, queue).await?;
    let (dlq, count) = (session.dlq.clone(), session.count);
    if !yes {
        session.close().await;
        let text = format!("{dlq} holds {count} messages; nothing deleted: purge them with --yes");
        return Ok(Outcome::failed(json!({"queue": dlq, "count": count, "purged": 0}), text));
    }
    let purged = session
        .channel
        .queue_purge(dlq.as_str().into(), QueuePurgeOptions::default())
        .await
        .map_err(MqError::broker(format!("purging {dlq}")))?;
    session.close().await;
    Ok(Outcome::ok(json!({"queue": dlq, "purged": purged}), format!("{dlq}: purged {purged} messages")))
}
