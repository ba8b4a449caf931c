//! `send`: a request and its reply (NestJS `client.send`).

use lapin::{BasicProperties, options::BasicPublishOptions, types::FieldTable};
use serde::Serialize;
use serde_json::{Value, value::RawValue};

use super::{Client, SendOptions, pending::CallError};
use crate::{
    contracts::Request,
    error::{DecodeError, RemoteError, RpcError},
    topology,
    trace::{Messaging, SpanKind, TraceContext},
    wire::{self, RequestPacket},
};

impl Client {
    /// Sends a typed request to the configured queue and waits for its typed reply.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, RpcError> {
        self.send_with(request, SendOptions::default()).await
    }

    /// [`Client::send`] with per-call options.
    pub async fn send_with<R: Request>(&self, request: &R, options: SendOptions) -> Result<R::Response, RpcError> {
        let response = self.send_data(&R::pattern(), request, options).await?;
        serde_json::from_str(response.get())
            .map_err(|source| RpcError::Decode { pattern: R::PATTERN.to_owned(), source: DecodeError::Type(source) })
    }

    /// The untyped request path, for tools and patterns without a Rust contract.
    pub async fn send_raw(&self, pattern: &Value, data: &Value, options: SendOptions) -> Result<Value, RpcError> {
        let response = self.send_data(pattern, data, options).await?;
        serde_json::from_str(response.get())
            .map_err(|source| RpcError::Decode { pattern: wire::route_key(pattern), source: DecodeError::Type(source) })
    }

    /// Publishes the request packet and waits for the reply matched to it, within the deadline.
    async fn send_data<T: Serialize + ?Sized>(
        &self,
        pattern: &Value,
        data: &T,
        options: SendOptions,
    ) -> Result<Box<RawValue>, RpcError> {
        let config = &self.inner.config;
        let timeout = options.timeout.unwrap_or(config.timeout);
        let queue = options.queue.or_else(|| config.queue.clone()).unwrap_or_default();
        // Only errors name the pattern: rendered then, not on every call.
        let pattern_text = || wire::route_key(pattern);
        // Registered before publishing, so that no reply can come before its call is known.
        let mut call = self.inner.calls.register();
        let body = serde_json::to_vec(&RequestPacket { pattern, data, id: &call.id }).map_err(RpcError::Encode)?;
        // While failing over to another node, the call waits for it within its deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        let link = self
            .inner
            .link
            .get_or_failover(deadline)
            .await
            .ok_or(RpcError::Unavailable { reason: "not connected", source: None })?;

        let mut headers = FieldTable::default();
        // Exported, the call has a client span of its own, ended with the call, and the
        // request carries its context; otherwise a child of the current one.
        let messaging =
            Messaging { conversation_id: Some(&call.id), body_size: Some(body.len()), ..Messaging::send("", &queue) };
        let span = messaging.send_span(SpanKind::Client);
        TraceContext::start_span(&span, None).unwrap_or_else(TraceContext::outgoing).inject(&mut headers);
        let properties = BasicProperties::default()
            .with_correlation_id(call.id.as_str().into())
            .with_reply_to(topology::REPLY_TO.into())
            .with_headers(headers);
        // The deadline covers the publish too: a publish racing a breaking link must not hang.
        let exchange = async {
            link.rpc
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
                .await
                .map_err(|source| RpcError::Unavailable { reason: "publish failed", source: Some(source) })?;
            Ok((&mut call.outcome).await)
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => Err(RpcError::Timeout { pattern: pattern_text(), timeout }),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(_))) => Err(RpcError::Unavailable { reason: "client stopped", source: None }),
            Ok(Ok(Ok(Ok(value)))) => Ok(value),
            Ok(Ok(Ok(Err(error)))) => Err(match error {
                CallError::Remote(error) => RpcError::Remote { pattern: pattern_text(), error: RemoteError(error) },
                CallError::NoHandler => RpcError::NoHandler { pattern: pattern_text() },
                CallError::Decode(source) => RpcError::Decode { pattern: pattern_text(), source },
                CallError::Lost(source) => RpcError::Unavailable { reason: "connection lost", source },
            }),
        }
    }
}
