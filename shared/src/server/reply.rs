//! Answering a request: the one place a reply is published.

use lapin::{BasicProperties, Channel, message::Delivery, options::BasicPublishOptions, types::ShortString};

/// Where a request's answer goes: the caller's `reply_to` queue, under its correlation id.
pub(crate) struct ReplyTo {
    queue: ShortString,
    correlation_id: ShortString,
}

impl ReplyTo {
    /// Whom to answer, if the message names a reply queue (an event names none). Without a
    /// `correlation_id` the packet `id` stands in, which NestJS callers set to the same value.
    pub(crate) fn of(delivery: &Delivery, packet_id: Option<&str>) -> Option<Self> {
        let queue = delivery.properties.reply_to().clone()?;
        let correlation_id =
            delivery.properties.correlation_id().clone().unwrap_or_else(|| packet_id.unwrap_or_default().into());
        Some(Self { queue, correlation_id })
    }

    /// Publishes `body` (an encoded reply packet) through the consuming channel. Not
    /// confirmed, as NestJS does not either: a lost reply makes the caller time out, and
    /// waiting for a confirm would only hold back the ack.
    pub(crate) async fn send(self, channel: &Channel, body: &[u8]) {
        let properties = BasicProperties::default().with_correlation_id(self.correlation_id);
        let published =
            channel.basic_publish("".into(), self.queue, BasicPublishOptions::default(), body, properties).await;
        if let Err(error) = published {
            tracing::warn!(error = %error, "publishing the reply failed");
        }
    }
}
