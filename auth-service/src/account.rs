//! The inputs of an account, parsed at the edge: code behind it cannot hold an invalid email,
//! name or password.
//!
//! The rules, with the messages clients see. Each is also stated, exactly, in the OpenAPI
//! document ([`EMAIL_PATTERN`], [`NAME_PATTERN`] and the length bounds), so that a request the
//! document calls valid is never rejected and one it calls invalid always is. Lengths count
//! Unicode scalar values of the value as sent; only spaces (U+0020) are trimmed.
//! - email: at most 254 characters; surrounding spaces removed; one `@`; a local part of at
//!   most 64 characters from the RFC 5322 "atext" set and dots (no leading, trailing or
//!   doubled dot); a domain of at least two dot-separated labels of letters, digits and inner
//!   hyphens, at most 63 characters each, not ending in an all-numeric label. ASCII only:
//!   internationalised domains are sent in their punycode form. Quoted local parts are not
//!   accepted.
//! - password: 8 to 128 characters, taken as is (no trimming).
//! - name: 1 to 100 characters; no control characters (Unicode category Cc); not only spaces;
//!   surrounding spaces removed.

use secrecy::{ExposeSecret, SecretString};

/// The longest email address SMTP can carry (RFC 5321 §4.5.3.1.3, path limit minus brackets).
pub const EMAIL_MAX: usize = 254;
/// The longest local part (RFC 5321 §4.5.3.1.1).
const LOCAL_PART_MAX: usize = 64;
/// The longest DNS label.
const LABEL_MAX: usize = 63;
pub const PASSWORD_MIN: usize = 8;
/// Bounds the work an attacker can make the hasher do per request, and what we accept from
/// password managers.
pub const PASSWORD_MAX: usize = 128;
pub const NAME_MAX: usize = 100;

/// The email rules as an ECMA-262 pattern (the OpenAPI document's `pattern`), with
/// [`EMAIL_MAX`] as `maxLength`.
pub const EMAIL_PATTERN: &str = concat!(
    r"^ *(?![^@]{65})",
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+",
    r"(?![0-9]+ *$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])? *$",
);

/// The name rules as an ECMA-262 pattern (no control characters, something besides spaces),
/// with 1 to [`NAME_MAX`] as `minLength`/`maxLength`.
pub const NAME_PATTERN: &str =
    r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u001F\u007F-\u009F ][^\u0000-\u001F\u007F-\u009F]*$";

/// A syntactically valid email address, as the user typed it (trimmed). Uniqueness is
/// case-insensitive (the database compares `lower(email)`), the stored spelling is the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// A password within the length bounds. Its `Debug` is redacted and it is never serialised.
#[derive(Debug)]
pub struct Password(SecretString);

/// A display name: trimmed, 1 to 100 characters, printable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        const SHAPE: &str = "must be an email address like name@example.com";
        if raw.chars().count() > EMAIL_MAX {
            return Err("must be at most 254 characters");
        }
        let email = raw.trim_matches(' ');
        if email.is_empty() {
            return Err("must not be empty");
        }
        let (local, domain) = email.split_once('@').ok_or(SHAPE)?;
        if !valid_local_part(local) || !valid_domain(domain) {
            return Err(SHAPE);
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= LOCAL_PART_MAX
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c)))
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= LABEL_MAX
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

impl Password {
    /// A new password, for signup: the length rules apply.
    pub fn parse(raw: String) -> Result<Self, &'static str> {
        let length = raw.chars().count();
        if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&length) {
            return Err("must be between 8 and 128 characters");
        }
        Ok(Self(raw.into()))
    }

    /// A password offered at login: not checked against today's rules, since an account's
    /// password was valid under the rules of its signup. Its cost is bounded by the body limit.
    pub fn offered(raw: String) -> Self {
        Self(raw.into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.chars().count() > NAME_MAX {
            return Err("must be at most 100 characters");
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        let name = raw.trim_matches(' ');
        if name.is_empty() {
            return Err("must not be empty or only spaces");
        }
        Ok(Self(name.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for email in ["ada@example.com", "a.b+tag@sub.example.co.uk", "x_y-z@ex-ample.io", "O'Neil@example.org"] {
            assert!(Email::parse(email).is_ok(), "{email}");
        }
        assert_eq!(Email::parse("  ada@example.com ").unwrap().as_str(), "ada@example.com");
    }

    #[test]
    fn rejects_malformed_addresses() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        for email in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@@example.com",
            "ada@example",
            "ada@-example.com",
            "ada@example-.com",
            "ada@exa mple.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "ada@example..com",
            "ada@127.0.0.1",
            "adä@example.com",
            &long_local,
            &long_total,
        ] {
            assert!(Email::parse(email).is_err(), "{email:?}");
        }
        assert_eq!(Email::parse(&long_total), Err("must be at most 254 characters"));
    }

    #[test]
    fn password_length_counts_characters() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("é".repeat(128)).is_ok());
        assert!(Password::parse("é".repeat(129)).is_err());
        assert!(Password::parse("  spaces  ".into()).is_ok());
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada  ").unwrap().into_string(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"n".repeat(100)).is_ok());
        assert!(UserName::parse(&"n".repeat(101)).is_err());
        assert!(UserName::parse("Ada\u{0}").is_err());
        assert!(UserName::parse("Ada\u{85}").is_err(), "C1 controls too");
        assert!(UserName::parse(" \u{a0} ").is_ok(), "a no-break space is not a space");
        assert!(UserName::parse(&format!(" {}", "n".repeat(100))).is_err(), "the length is of the value as sent");
    }

    #[test]
    fn email_surroundings_are_spaces_only() {
        assert_eq!(Email::parse(" ada@example.com  ").unwrap().as_str(), "ada@example.com");
        assert!(Email::parse("\tada@example.com").is_err());
        assert!(Email::parse("ada@example.com\n").is_err());
    }
}
