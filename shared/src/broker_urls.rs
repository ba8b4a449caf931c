//! Where the broker is: one URL, or the URLs of a cluster's nodes (`AMQP_URL=a,b,c`), and the
//! one place that keeps their passwords out of logs, metrics and errors.
//!
//! A list is split on commas (a comma inside one URL must be percent-encoded, `%2C`) and every
//! entry is parsed as an AMQP URI up front, so that a malformed list is a startup error naming
//! the bad entry by position, never a URL that the broker reads as a vhost. What the services
//! show of an entry is its node, `host:port`: never the user or password. Text that comes back
//! from lapin or the broker is passed through [`redact`] before it is logged or returned.

use std::{fmt, str::FromStr};

use lapin::uri::AMQPUri;

/// One broker node: its parsed URI (credentials included) and the `host:port` shown for it.
#[derive(Clone)]
pub struct BrokerUrl {
    uri: Result<AMQPUri, String>,
    node: String,
}

impl BrokerUrl {
    /// Parses one URL; the error names what is wrong without repeating any credential.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let uri = text.parse::<AMQPUri>().map_err(|reason| redact(&reason))?;
        Ok(Self { node: node_of(text, &uri), uri: Ok(uri) })
    }

    /// The node this URL points at, `host:port`, fit for logs and readiness.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The parsed URI, or why it could not be parsed (only for [`BrokerUrls::lenient`] lists).
    pub(crate) fn uri(&self) -> Result<&AMQPUri, &str> {
        self.uri.as_ref().map_err(String::as_str)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)
    }
}

/// The broker URLs to try, in the order given; never empty. `Debug` shows nodes only.
#[derive(Clone)]
pub struct BrokerUrls(Vec<BrokerUrl>);

/// Why an `AMQP_URL` list cannot be used. The text of an entry is shown redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlsError {
    #[error("no broker URL given")]
    Empty,
    #[error("entry {position} of {count} ({entry}) is not a broker URL: {reason}")]
    Entry { position: usize, count: usize, entry: String, reason: String },
}

impl BrokerUrls {
    /// Parses a comma-separated list, rejecting the first malformed or empty entry.
    pub fn parse(text: &str) -> Result<Self, BrokerUrlsError> {
        let entries: Vec<&str> = text.split(',').collect();
        let count = entries.len();
        if text.trim().is_empty() {
            return Err(BrokerUrlsError::Empty);
        }
        let urls = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let reject = |reason: String| BrokerUrlsError::Entry {
                    position: index + 1,
                    count,
                    entry: format!("{:?}", redact(entry.trim())),
                    reason,
                };
                if entry.trim().is_empty() {
                    return Err(reject("empty".to_owned()));
                }
                if !entry.contains("://") {
                    return Err(reject("expected amqp://user:pass@host:port/vhost".to_owned()));
                }
                BrokerUrl::parse(entry).map_err(reject)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(urls))
    }

    /// Like [`BrokerUrls::parse`], but an entry that does not parse is kept and fails when it
    /// is tried (with a redacted reason): for [`BrokerConfig::new`](crate::BrokerConfig::new),
    /// which cannot fail. Configuration read by [`crate::config`] is validated at startup.
    pub fn lenient(text: &str) -> Self {
        match Self::parse(text) {
            Ok(urls) => urls,
            Err(_) => Self(
                text.split(',')
                    .map(|entry| {
                        BrokerUrl::parse(entry)
                            .unwrap_or_else(|reason| BrokerUrl { uri: Err(reason), node: redact(entry.trim()) })
                    })
                    .collect(),
            ),
        }
    }

    /// The nodes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &BrokerUrl> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL at `index`, wrapping around the list.
    pub fn at(&self, index: usize) -> Option<&BrokerUrl> {
        self.0.get(index.checked_rem(self.0.len())?)
    }

    /// `host:port, host:port, …`.
    pub fn nodes(&self) -> String {
        self.0.iter().map(BrokerUrl::node).collect::<Vec<_>>().join(", ")
    }
}

impl FromStr for BrokerUrls {
    type Err = BrokerUrlsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

/// `host:port` as written in the URL (lapin's parser turns an IP address into `localhost`).
fn node_of(text: &str, uri: &AMQPUri) -> String {
    let authority = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => host_port,
    };
    let host = if host.is_empty() { uri.authority.host.as_str() } else { host };
    format!("{host}:{}", uri.authority.port)
}

/// Text with every credential removed: the user-information part of anything URL-like
/// (`scheme://user:pass@`, `user:pass@host`, percent-encoded or not) becomes `***@`. Used on
/// every error text that may echo a URL (lapin's, and the broker's reply texts).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (before, after) = rest.split_at(at);
        // The token the `@` ends: back to a separator, or to the `//` of a scheme.
        let start = before
            .rfind(|c: char| c.is_whitespace() || matches!(c, ',' | '\'' | '"' | '(' | '[' | '<' | '=' | '`'))
            .map_or(0, |index| index + 1);
        let token = &before[start..];
        let userinfo_start = token.rfind("//").map_or(0, |index| index + 2);
        let userinfo = &token[userinfo_start..];
        let looks_like_credentials = !userinfo.is_empty()
            && (token.contains("://")
                || token.contains("%3A%2F%2F")
                || token.contains("%3a%2f%2f")
                || userinfo.contains(':')
                || userinfo.to_ascii_lowercase().contains("%3a"));
        out.push_str(&before[..start]);
        if looks_like_credentials {
            let kept = &token[..userinfo_start];
            // A percent-encoded URL (`amqp%3A%2F%2Fuser%3Apass`) has no `//` to find.
            let kept = match token.to_ascii_lowercase().rfind("%2f%2f") {
                Some(index) if userinfo_start == 0 => &token[..index + 6],
                _ => kept,
            };
            out.push_str(kept);
            out.push_str("***");
            // A password with a raw `@` in it: the host starts after the segment's last `@`.
            let after = &after[1..];
            let segment = after.split(|c: char| c.is_whitespace() || matches!(c, '/' | ',' | '\'' | '"')).next();
            let skip = segment.and_then(|segment| segment.rfind('@')).map_or(0, |index| index + 1);
            out.push('@');
            rest = &after[skip..];
            continue;
        }
        out.push_str(token);
        out.push('@');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_url_is_a_list_of_one() {
        let urls = BrokerUrls::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(urls.len(), 1);
        assert_eq!(urls.nodes(), "127.0.0.1:5672");
        assert_eq!(urls.at(0).unwrap().uri().unwrap().vhost, "/");
    }

    #[test]
    fn a_list_keeps_its_order_and_each_vhost() {
        let urls = BrokerUrls::parse("amqp://u:p@rabbit-1:5672/app, amqp://u:p@rabbit-2/app,amqps://u:p@[::1]:5671/x")
            .unwrap();
        assert_eq!(urls.nodes(), "rabbit-1:5672, rabbit-2:5672, [::1]:5671");
        assert_eq!(urls.at(1).unwrap().uri().unwrap().vhost, "app");
        assert_eq!(urls.at(4).unwrap().node(), "rabbit-2:5672", "indices wrap around");
    }

    #[test]
    fn a_bad_entry_is_named_by_position_without_its_password() {
        let error = BrokerUrls::parse("amqp://u:secret1@a:5672/v,http://u:secret2@b/v,amqp://c/v").unwrap_err();
        let shown = error.to_string();
        assert!(shown.starts_with("entry 2 of 3 (\"http://***@b/v\")"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        let error = BrokerUrls::parse("amqp://a/v,,amqp://c/v").unwrap_err().to_string();
        assert!(error.contains("entry 2 of 3") && error.contains("empty"), "{error}");
        let error = BrokerUrls::parse("guest:hunter2@a:5672").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert_eq!(BrokerUrls::parse(" ").unwrap_err(), BrokerUrlsError::Empty);
    }

    #[test]
    fn debug_shows_nodes_only() {
        let urls = BrokerUrls::parse("amqp://u:hunter2@a:1/v,amqp://u:hunter2@b:2/v").unwrap();
        assert_eq!(format!("{urls:?}"), "[a:1, b:2]");
    }

    #[test]
    fn lenient_lists_keep_bad_entries_redacted() {
        let urls = BrokerUrls::lenient("amqp://u:p@a:1/v,nonsense://u:hunter2@b/v");
        assert_eq!(urls.len(), 2);
        assert!(urls.at(1).unwrap().uri().is_err());
        assert!(!format!("{urls:?}").contains("hunter2"));
    }

    #[test]
    fn redact_removes_every_kind_of_credential() {
        let echoed = "NOT_ALLOWED - vhost cluster,amqp://guest:guest@127.0.0.1:5683/cluster not found";
        assert_eq!(redact(echoed), "NOT_ALLOWED - vhost cluster,amqp://***@127.0.0.1:5683/cluster not found");
        assert_eq!(redact("failed: user:pw@host:1"), "failed: ***@host:1");
        assert_eq!(redact("'amqps://a%40b:p%3Aw@h/v'"), "'amqps://***@h/v'");
        assert_eq!(redact("vhost amqp%3A%2F%2Fu%3Apw@h"), "vhost amqp%3A%2F%2F***@h");
        assert_eq!(redact("mail ada@example.com ok"), "mail ada@example.com ok");
        assert_eq!(redact("no at sign"), "no at sign");
        assert_eq!(redact("amqp://u:p@ss@h:1/v"), "amqp://***@h:1/v");
    }
}
