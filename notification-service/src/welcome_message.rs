//! The welcome mail itself: subject, a plain-text and an HTML part from the templates under
//! `src/templates/`, and the `Message-ID` derived from the event.

use lettre::{
    Message,
    message::{Mailbox, MultiPart},
};

use crate::recipient::Recipient;

const TEXT_TEMPLATE: &str = include_str!("templates/welcome.txt");
const HTML_TEMPLATE: &str = include_str!("templates/welcome.html");
/// The one placeholder the templates use.
const NAME_PLACEHOLDER: &str = "{{name}}";
/// How the greeting addresses a user whose name was empty (or only control characters).
const NAMELESS_GREETING: &str = "there";

/// Builds the welcome mail for `recipient`.
///
/// Guarantees: the name reaches headers only through lettre's header encoding, after
/// [`crate::recipient::DisplayName`] removed line breaks; the HTML part gets it
/// HTML-escaped, the text part verbatim (plain text is not interpreted). `message_id` is
/// written as `<message_id>`; callers pass [`crate::event_id::message_id`], which
/// is always a safe token.
pub fn render(from: &Mailbox, recipient: &Recipient, message_id: &str) -> Result<Message, lettre::error::Error> {
    let name = recipient.name.as_str();
    let greeting = if name.is_empty() { NAMELESS_GREETING } else { name };
    let subject = if name.is_empty() { "Welcome!".to_owned() } else { format!("Welcome, {name}!") };
    // `str::replace` does not rescan what it inserted, so a name containing `{{name}}` is inert.
    let text = TEXT_TEMPLATE.replace(NAME_PLACEHOLDER, greeting);
    let html = HTML_TEMPLATE.replace(NAME_PLACEHOLDER, &escape_html(greeting));
    Message::builder()
        .from(from.clone())
        .to(recipient.mailbox())
        .subject(subject)
        .message_id(Some(format!("<{message_id}>")))
        .multipart(MultiPart::alternative_plain_html(text, html))
}

/// Escapes text for HTML element content and attribute values alike.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(name: &str) -> String {
        let from: Mailbox = "Welcome <welcome@example.com>".parse().unwrap();
        let recipient = Recipient::parse(name, "ada@example.com").unwrap();
        String::from_utf8(render(&from, &recipient, "evt-1@notification-service").unwrap().formatted()).unwrap()
    }

    #[test]
    fn escapes_every_html_special() {
        assert_eq!(escape_html(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn headers_name_the_user_and_carry_the_message_id() {
        let mail = rendered("Ada");
        assert!(mail.contains("Subject: Welcome, Ada!\r\n"), "{mail}");
        assert!(mail.contains("Message-ID: <evt-1@notification-service>\r\n"), "{mail}");
        assert!(mail.contains("To: Ada <ada@example.com>\r\n"), "{mail}");
    }

    #[test]
    fn a_nameless_user_gets_a_generic_greeting() {
        let mail = rendered("\r\n");
        assert!(mail.contains("Subject: Welcome!\r\n"), "{mail}");
        assert!(mail.contains("Hi there,"), "{mail}");
    }

    #[test]
    fn injected_headers_stay_inside_the_display_name() {
        let mail = rendered("Ada\r\nBcc: evil@example.com");
        assert!(!mail.lines().any(|line| line.to_ascii_lowercase().starts_with("bcc:")), "{mail}");
    }
}
