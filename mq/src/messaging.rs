//! `mq send` and `mq emit`: a request and an event exactly as a NestJS client sends them,
//! through shared's client.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    CancellationToken, Client, ClientConfig, EmitOptions, EmitTarget, RpcError, SendOptions, config::BrokerSettings,
    contracts::pattern_value,
};

use crate::{error::MqError, outcome::Outcome};

/// How long the client may take to connect before the command gives up.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Reads a JSON argument.
pub fn parse_json(name: &str, text: &str) -> Result<Value, MqError> {
    serde_json::from_str(text)
        .map_err(|error| MqError::Usage(format!("{name} must be JSON ({error}); a string is written '\"text\"'")))
}

/// A connected client that declares nothing (a tool must not create queues or exchanges).
async fn client(broker: &BrokerSettings, timeout: Duration) -> Result<(Client, CancellationToken), MqError> {
    let shutdown = CancellationToken::new();
    let mut config = ClientConfig::new(broker.broker_config("mq")).timeout(timeout);
    config.declare_queue = false;
    let client = Client::start(config, shutdown.clone());
    if client.wait_connected(CONNECT_WAIT).await {
        Ok((client, shutdown))
    } else {
        client.shutdown().await;
        let node = broker.broker_config("mq").urls.nodes();
        Err(MqError::Connect(shared::connection::ConnectError {
            node,
            reason: format!("not connected within {CONNECT_WAIT:?}"),
        }))
    }
}

pub async fn send(
    broker: &BrokerSettings,
    pattern: &str,
    data: &str,
    queue: String,
    timeout: Duration,
) -> Result<Outcome, MqError> {
    let data = parse_json("DATA", data)?;
    let pattern = pattern_value(pattern);
    let (client, _shutdown) = client(broker, timeout).await?;
    let options = SendOptions { queue: Some(queue), timeout: Some(timeout) };
    let result = client.send_raw(&pattern, &data, options).await;
    client.shutdown().await;
    Ok(match result {
        Ok(response) => {
            let text = serde_json::to_string_pretty(&response).unwrap_or_default();
            Outcome::ok(json!({"ok": true, "response": response}), text)
        }
        Err(error) => {
            let described = describe(&error);
            let text = format!("error: {}", chain(&error));
            Outcome::failed(json!({"ok": false, "error": described}), text)
        }
    })
}

/// The typed error as JSON: its kind, and the remote `err` as sent.
fn describe(error: &RpcError) -> Value {
    let message = chain(error);
    match error {
        RpcError::Remote { error: remote, .. } => json!({
            "kind": "remote",
            "status": remote.status(),
            "message": remote.message(),
            "err": remote.0,
        }),
        RpcError::Timeout { timeout, .. } => {
            json!({"kind": "timeout", "timeoutMs": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), "message": message})
        }
        RpcError::NoHandler { .. } => json!({"kind": "no-handler", "message": message}),
        RpcError::Unavailable { .. } => json!({"kind": "unavailable", "message": message}),
        RpcError::Decode { .. } => json!({"kind": "decode", "message": message}),
        RpcError::Encode(_) => json!({"kind": "encode", "message": message}),
    }
}

/// An error and its causes, `: `-separated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub async fn emit(
    broker: &BrokerSettings,
    pattern: &str,
    data: &str,
    exchange: Option<String>,
    queue: Option<String>,
    message_id: Option<String>,
) -> Result<Outcome, MqError> {
    let data = parse_json("DATA", data)?;
    let pattern_json = pattern_value(pattern);
    let target = match queue {
        Some(queue) => EmitTarget::Queue(queue),
        None => EmitTarget::Exchange(exchange.unwrap_or_else(|| broker.events_exchange.clone())),
    };
    let message_id = message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let options = EmitOptions { target: Some(target.clone()), message_id: Some(message_id.clone()), trace: None };
    let (client, _shutdown) = client(broker, Duration::from_secs(5)).await?;
    let result = client.emit_raw(&pattern_json, &data, options).await;
    client.shutdown().await;
    let (kind, name) = match &target {
        EmitTarget::Exchange(exchange) => ("exchange", exchange.as_str()),
        EmitTarget::Queue(queue) => ("queue", queue.as_str()),
    };
    Ok(match result {
        Ok(()) => Outcome::ok(
            json!({"ok": true, kind: name, "pattern": pattern, "messageId": message_id}),
            format!("emitted {pattern} to {kind} {name:?} (message_id {message_id}), confirmed"),
        ),
        Err(error) => {
            let message = chain(&error);
            Outcome::failed(
                json!({"ok": false, "error": {"kind": "emit", "message": message}}),
                format!("error: {message}"),
            )
        }
    })
}
