//! Small helpers for the `scheme://[user[:password]@]host[:port][/path][?query]` URLs the kit
//! hands around (amqp://, postgres://, smtp://), without pulling in a URL parser.

use std::net::SocketAddr;

/// Splits `url` into (everything up to and including the userinfo, `host[:port]`, the rest
/// starting at the path, query or fragment). `None` when there is no `://`.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let authority_start = url.find("://")? + 3;
    let after = &url[authority_start..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    Some((&url[..authority_start + host_start], &authority[host_start..], &after[authority_end..]))
}

/// The `host[:port]` part of `url` (for `[::1]:5672` the brackets are kept), or `None`
/// when `url` has no `scheme://`.
pub fn host_port(url: &str) -> Option<&str> {
    split(url).map(|(_, host_port, _)| host_port)
}

/// `url` with its `host[:port]` replaced by `new_host_port`; scheme, credentials, path
/// (database name or vhost) and query are kept as they were.
///
/// # Panics
/// When `url` has no `scheme://`.
pub fn with_host_port(url: &str, new_host_port: &str) -> String {
    let (head, _, rest) = split(url).unwrap_or_else(|| panic!("not a scheme:// URL: {url}"));
    format!("{head}{new_host_port}{rest}")
}

/// `url` with its path replaced by `/path` (pass `""` to remove it); the query is kept.
/// For Postgres the path is the database name, so this turns a server URL into a database
/// URL and back.
///
/// # Panics
/// When `url` has no `scheme://`.
pub fn with_path(url: &str, path: &str) -> String {
    let (head, host_port, rest) = split(url).unwrap_or_else(|| panic!("not a scheme:// URL: {url}"));
    let query = rest.find(['?', '#']).map_or("", |start| &rest[start..]);
    let slash = if path.is_empty() { "" } else { "/" };
    format!("{head}{host_port}{slash}{path}{query}")
}

/// The port a scheme uses when its URL names none.
fn default_port(url: &str) -> Option<u16> {
    let scheme = &url[..url.find("://")?];
    match scheme {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "postgres" | "postgresql" => Some(5432),
        "smtp" => Some(25),
        "smtps" => Some(465),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Resolves the host and port of `url` (the scheme's usual port when none is given) to one
/// socket address, preferring IPv4.
///
/// # Panics
/// When the URL has no host, no port can be inferred, or the name does not resolve.
pub async fn socket_addr(url: &str) -> SocketAddr {
    let host_port = host_port(url).unwrap_or_else(|| panic!("not a scheme:// URL: {url}"));
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    let target = if has_port {
        host_port.to_owned()
    } else {
        let port = default_port(url).unwrap_or_else(|| panic!("no port in {url}"));
        format!("{host_port}:{port}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target)
        .await
        .unwrap_or_else(|error| panic!("cannot resolve {target}: {error}"))
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .unwrap_or_else(|| panic!("{target} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_host_port_keeping_credentials_and_path() {
        assert_eq!(
            with_host_port("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1:40000"),
            "amqp://guest:guest@127.0.0.1:40000/%2f"
        );
        assert_eq!(with_host_port("smtp://mail:25", "[::1]:9"), "smtp://[::1]:9");
        assert_eq!(host_port("postgres://u:p@[::1]:5432/db?x=1"), Some("[::1]:5432"));
    }

    #[test]
    fn sets_and_strips_the_path() {
        let server = "postgres://postgres@127.0.0.1:5432?sslmode=disable";
        let db = with_path(server, "test_1");
        assert_eq!(db, "postgres://postgres@127.0.0.1:5432/test_1?sslmode=disable");
        assert_eq!(with_path(&db, ""), server);
        assert_eq!(with_path("postgres://h/db", ""), "postgres://h");
    }
}
