//! Turns a `--target` URL into the socket address to connect to, refusing any host that is not
//! loopback.
//!
//! Load is only ever sent to this machine: traffic to any other address, private or public, is
//! never legitimate for this tool. The check is on the literal host, before any connection: an
//! IPv4 address in 127.0.0.0/8, `[::1]`, or the name `localhost`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyper::Uri;
use hyper::header::HeaderValue;

/// A loopback HTTP server to send requests to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host[:port]` as written in the URL, sent as the `Host` header.
    pub host_header: HeaderValue,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{0}` is not a URL such as http://127.0.0.1:8080")]
    Invalid(String),
    #[error("`{0}`: only plain http:// targets are supported")]
    Scheme(String),
    #[error(
        "`{url}`: host `{host}` is not loopback; kurz-load only sends to 127.0.0.0/8, localhost or [::1]"
    )]
    NotLoopback { url: String, host: String },
    #[error("`{0}`: give only scheme, host and port (no path or query)")]
    HasPath(String),
}

/// Parses `url` and checks that its host is loopback.
pub fn parse_target(url: &str) -> Result<Target, TargetError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| TargetError::Invalid(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(TargetError::Scheme(url.to_owned()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| TargetError::Invalid(url.to_owned()))?;
    let ip = loopback_ip(authority.host()).ok_or_else(|| TargetError::NotLoopback {
        url: url.to_owned(),
        host: authority.host().to_owned(),
    })?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(TargetError::HasPath(url.to_owned()));
    }
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|_| TargetError::Invalid(url.to_owned()))?;
    Ok(Target {
        addr: SocketAddr::new(ip, uri.port_u16().unwrap_or(80)),
        host_header,
    })
}

/// The address to connect to when `host` is loopback, `None` otherwise.
///
/// `localhost` is taken to mean 127.0.0.1 rather than looked up: a lookup could be answered by a
/// hosts file that points elsewhere, and it could return `::1` first for a server that listens on
/// IPv4 only. A server on `::1` is reached by writing `[::1]`.
pub fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    // The URI keeps the brackets of an IPv6 literal.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) if v6.is_loopback() && host.starts_with('[') => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        for (url, addr) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://127.42.0.9:9", "127.42.0.9:9"),
            ("http://localhost:8081", "127.0.0.1:8081"),
            ("http://LOCALHOST", "127.0.0.1:80"),
            ("http://[::1]:8080", "[::1]:8080"),
        ] {
            let target = parse_target(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.addr.to_string(), addr, "{url}");
        }
    }

    #[test]
    fn the_host_header_keeps_the_name_and_port_as_written() {
        let target = parse_target("http://localhost:8081").expect("loopback");
        assert_eq!(target.host_header, "localhost:8081");
    }

    #[test]
    fn non_loopback_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.10",
            "http://172.16.0.1",
            "http://8.8.8.8",
            "http://0.0.0.0:8080",
            "http://128.0.0.1",
            "http://example.com",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://127.1",
            "http://0x7f000001",
            "http://[::]:8080",
            "http://[::ffff:127.0.0.1]:8080",
            "http://[fe80::1]:8080",
        ] {
            assert!(
                matches!(parse_target(url), Err(TargetError::NotLoopback { .. })),
                "{url} should be refused as not loopback"
            );
        }
    }

    #[test]
    fn tls_paths_and_garbage_are_refused() {
        assert_eq!(
            parse_target("https://127.0.0.1:8443").map(|t| t.addr),
            Err(TargetError::Scheme("https://127.0.0.1:8443".into()))
        );
        assert!(matches!(
            parse_target("http://127.0.0.1:8080/api"),
            Err(TargetError::HasPath(_))
        ));
        assert!(matches!(
            parse_target("127.0.0.1:8080"),
            Err(TargetError::Scheme(_) | TargetError::Invalid(_))
        ));
        assert!(matches!(
            parse_target("not a url"),
            Err(TargetError::Invalid(_))
        ));
    }
}
