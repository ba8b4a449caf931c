//! The recipient of a welcome mail, parsed from the untrusted name and email of an event.

use std::str::FromStr;

use lettre::{Address, address::AddressError, message::Mailbox};

/// Display names are cut to this many characters: enough for any real name, short enough
/// that a subject line never needs folding to stay readable.
const MAX_NAME_CHARS: usize = 64;

/// A user's name made safe for mail headers and greetings.
///
/// Guarantees: no control characters (CR, LF, TAB, NUL, …), no Unicode line or paragraph
/// separators and no bidirectional overrides (which could make a name display as something
/// else), whitespace collapsed to single spaces, trimmed, at most 64 characters. Hostile
/// input is neutralised rather than rejected: `"Ada\r\nBcc: x"` becomes `"Ada Bcc: x"`, a
/// harmless if odd name, and the user still gets a welcome. It may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Self {
        let visible: String =
            raw.chars().map(|c| if is_hidden_or_breaking(c) { ' ' } else { c }).take(MAX_NAME_CHARS * 4).collect();
        let collapsed = visible.split_whitespace().collect::<Vec<_>>().join(" ");
        Self(collapsed.chars().take(MAX_NAME_CHARS).collect::<String>().trim_end().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Characters that can break a header line or change how the rest of a line is displayed.
fn is_hidden_or_breaking(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Who a welcome mail goes to: a valid address (lettre's parser: a bad address is a permanent
/// failure, retrying cannot fix it) and a [`DisplayName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: DisplayName,
    pub address: Address,
}

impl Recipient {
    /// Parses the event's `name` and `email`. The error never contains the address itself
    /// (addresses stay out of logs and dead-letter headers).
    pub fn parse(name: &str, email: &str) -> Result<Self, AddressError> {
        Ok(Self { name: DisplayName::parse(name), address: Address::from_str(email)? })
    }

    /// The `To:` mailbox; lettre quotes or encodes the name as the header needs.
    pub fn mailbox(&self) -> Mailbox {
        let name = (!self.name.is_empty()).then(|| self.name.as_str().to_owned());
        Mailbox::new(name, self.address.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_controls_become_spaces() {
        assert_eq!(DisplayName::parse("Ada\r\nBcc: evil@example.com").as_str(), "Ada Bcc: evil@example.com");
        assert_eq!(DisplayName::parse("  Ada\t\u{0}Lovelace \u{2028} ").as_str(), "Ada Lovelace");
        assert_eq!(DisplayName::parse("\u{202e}evil").as_str(), "evil");
        assert!(DisplayName::parse("\r\n\t").is_empty());
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(DisplayName::parse(&"é".repeat(500)).as_str().chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for email in ["", "ada", "ada@", "@example.com", "ada@example.com\r\nBcc: evil@example.com", "a b@example.com"]
        {
            assert!(Recipient::parse("Ada", email).is_err(), "{email:?}");
        }
        assert!(Recipient::parse("Ada", "ada@example.com").is_ok());
    }

    #[test]
    fn mailbox_keeps_name_and_address_apart() {
        let recipient = Recipient::parse("Ada\r\nBcc: evil@example.com", "ada@example.com").unwrap();
        let mailbox = recipient.mailbox();
        assert_eq!(mailbox.name.as_deref(), Some("Ada Bcc: evil@example.com"));
        assert_eq!(mailbox.email.to_string(), "ada@example.com");
        assert_eq!(Recipient::parse("", "ada@example.com").unwrap().mailbox().name, None);
    }
}
