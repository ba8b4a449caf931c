//! A message the sink accepted, with helpers that decode it through `mail-parser`.

use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, MimeHeaders as _};

/// One message the sink accepted: the SMTP envelope and the full RFC 5322 text, with helpers
/// that decode it (MIME, RFC 2047 encoded words, transfer encodings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets; empty for the null sender.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub rcpt_to: Vec<String>,
    /// The message as received after `DATA` (headers and body), dot-unstuffed, without the
    /// terminating `.` line. Bytes that are not UTF-8 are replaced by U+FFFD.
    pub raw: String,
}

impl ReceivedMail {
    /// The first header `name` (case-insensitive), unfolded and with encoded words decoded;
    /// address headers come back as text, e.g. `Ada <ada@example.com>`.
    pub fn header(&self, name: &str) -> Option<String> {
        let header_name = HeaderName::parse(name.to_owned())?;
        // Read just this header as unstructured text, whatever its usual type.
        let message = MessageParser::new().header_text(header_name.clone()).parse_headers(self.raw.as_bytes())?;
        match message.header(header_name)? {
            HeaderValue::Text(text) => Some(unfold(text)),
            HeaderValue::TextList(list) => Some(unfold(&list.join(", "))),
            _ => None,
        }
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The `Message-ID` without its angle brackets.
    pub fn message_id(&self) -> Option<String> {
        self.parsed()?.message_id().map(str::to_owned)
    }

    /// The first `text/plain` body part, decoded (`None` if the message has none: an HTML
    /// part is not converted).
    pub fn text_body(&self) -> Option<String> {
        let message = self.parsed()?;
        message
            .text_bodies()
            .find(|part| part.is_text() && !part.is_text_html())
            .and_then(|part| part.text_contents().map(str::to_owned))
    }

    /// The first `text/html` body part, decoded (`None` if the message has none: a text part
    /// is not converted).
    pub fn html_body(&self) -> Option<String> {
        let message = self.parsed()?;
        message.html_bodies().find(|part| part.is_text_html()).and_then(|part| part.text_contents().map(str::to_owned))
    }

    /// Attachment file names, in order (parts with a `filename`/`name` that are not bodies).
    pub fn attachment_names(&self) -> Vec<String> {
        self.parsed()
            .map(|message| message.attachments().filter_map(|part| part.attachment_name().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn parsed(&self) -> Option<Message<'_>> {
        MessageParser::new().with_mime_headers().with_message_ids().parse(self.raw.as_bytes())
    }
}

/// Unfolds a header value: each line break with the whitespace around it becomes one space.
fn unfold(value: &str) -> String {
    value.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}
