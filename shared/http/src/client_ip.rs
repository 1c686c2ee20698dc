//! Who the client is: its IP address, believed from forwarding headers only when the TCP peer
//! is a trusted proxy (`KURZ_TRUSTED_PROXIES`).
//!
//! A proxy appends the address it received a request from to `X-Forwarded-For` (or adds a
//! `Forwarded: for=` element, RFC 7239), so the list reads client first, nearest proxy last.
//! Anything left of an untrusted hop was written by that hop, or by the client itself, and
//! proves nothing. So the walk goes from the right, past trusted proxies only, and stops at
//! the first address that is not one: that is the client. A client that sends these headers
//! itself cannot pick its address: from an untrusted peer they are ignored, and behind
//! trusted proxies its own entries lie left of the one the first proxy wrote.
//!
//! Entries that cannot be read (garbage, `unknown`, obfuscated `_names`) end the walk at the
//! last trusted hop reached, the nearest one to the bad entry: blaming a proxy's address
//! is safer than trusting anything written further left.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::http::header::{FORWARDED, HeaderMap, HeaderName, X_FORWARDED_FOR};
use kurz_settings::TrustedProxies;

/// The client's address: the TCP `peer`, unless the peer is a trusted proxy; then the
/// rightmost address of `X-Forwarded-For` (every such header, in order) that is not itself a
/// trusted proxy, or, when there is no `X-Forwarded-For`, of the `Forwarded` header's `for=`
/// parameters. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are given as IPv4.
///
/// The headers are only read when the peer is trusted, so with no trusted proxies (the
/// default) this costs a comparison.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    if headers.contains_key(X_FORWARDED_FOR) {
        walk(peer, headers, X_FORWARDED_FOR, trusted, forwarded_for)
    } else {
        walk(peer, headers, FORWARDED, trusted, forwarded_element)
    }
}

/// The per-IP rate-limit subject ([`subject`]) of `request`'s client ([`client_ip`]). Only a
/// request without a TCP peer (a test request, a Unix socket) has no address; those share one
/// subject.
pub fn request_subject(request: &actix_web::HttpRequest, trusted: &TrustedProxies) -> String {
    let peer = request
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |peer| {
            peer.ip()
        });
    subject(client_ip(peer, request.headers(), trusted))
}

/// The subject per-IP rate limits count under: an IPv4 address as it is, an IPv6 address as
/// its /64 network (`2001:db8:1:2::/64`). An IPv6 client usually owns a whole /64 (one per
/// home or per cloud instance) and can pick a fresh address from it for every request, so
/// counting single IPv6 addresses would give it 2^64 budgets.
pub fn subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1));
            format!("{network}/64")
        }
    }
}

/// From the peer leftwards past trusted hops, through the entries of every `name` header,
/// last header first; see the module docs. Allocates nothing.
fn walk(
    peer: IpAddr,
    headers: &HeaderMap,
    name: HeaderName,
    trusted: &TrustedProxies,
    parse: fn(&str) -> Option<IpAddr>,
) -> IpAddr {
    let mut nearest_trusted = peer;
    for value in headers.get_all(name).rev() {
        // Not visible ASCII: unreadable, so it ends the walk like garbage.
        let Ok(text) = value.to_str() else {
            return nearest_trusted;
        };
        for entry in RevEntries(Some(text)) {
            let Some(ip) = parse(entry) else {
                return nearest_trusted;
            };
            let ip = ip.to_canonical();
            if !trusted.contains(ip) {
                return ip;
            }
            nearest_trusted = ip;
        }
    }
    // Every hop was trusted (a request from inside): the leftmost is where it started.
    nearest_trusted
}

/// One `X-Forwarded-For` entry: an address, as some proxies write it also with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn forwarded_for(entry: &str) -> Option<IpAddr> {
    node(entry.trim())
}

/// The `for=` parameter of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
/// An element without one cannot be placed, so it ends the walk like garbage does.
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // `unknown` and obfuscated identifiers (`_hidden`) are not addresses: `node` refuses
        // them, which ends the walk.
        node(value)
    })
}

/// An address with or without a port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`.
fn node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The comma-separated entries of a header value, right to left. Commas inside a quoted
/// string (a `Forwarded` parameter may quote one) do not split.
struct RevEntries<'a>(Option<&'a str>);

impl<'a> Iterator for RevEntries<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.0?;
        let bytes = text.as_bytes();
        let mut in_quotes = false;
        for i in (0..bytes.len()).rev() {
            match bytes[i] {
                b'"' if i == 0 || bytes[i - 1] != b'\\' => in_quotes = !in_quotes,
                b',' if !in_quotes => {
                    self.0 = Some(&text[..i]);
                    return Some(&text[i + 1..]);
                }
                _ => {}
            }
        }
        self.0 = None;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    const PROXY: &str = "10.0.0.1";

    fn trusted(raw: &str) -> TrustedProxies {
        TrustedProxies::parse(raw).expect("valid proxies")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let pairs: Vec<_> = values.iter().map(|v| (X_FORWARDED_FOR, *v)).collect();
        headers(&pairs)
    }

    fn forwarded(value: &str) -> HeaderMap {
        headers(&[(FORWARDED, value)])
    }

    #[test]
    fn without_trusted_proxies_the_client_is_the_peer() {
        let spoofed = xff(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("198.51.100.7"), &spoofed, &TrustedProxies::default()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let spoofed = xff(&["203.0.113.9, 10.0.0.1"]);
        assert_eq!(
            client_ip(ip("198.51.100.7"), &spoofed, &trusted("10.0.0.0/8")),
            ip("198.51.100.7")
        );
        let spoofed = forwarded("for=203.0.113.9");
        assert_eq!(
            client_ip(ip("198.51.100.7"), &spoofed, &trusted("10.0.0.0/8")),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_entry() {
        // The client sent `1.1.1.1` itself; the proxy appended the address it saw.
        let headers = xff(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted(PROXY)),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_past() {
        let headers = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.7, 10.0.0.8"]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted("10.0.0.0/8")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn several_forwarded_for_headers_read_as_one_list_in_order() {
        let headers = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted("10.0.0.0/8")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        let headers = xff(&["10.0.0.5, 10.0.0.7"]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted("10.0.0.0/8")),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn a_trusted_peer_without_forwarding_headers_is_the_client() {
        assert_eq!(
            client_ip(ip(PROXY), &HeaderMap::new(), &trusted(PROXY)),
            ip(PROXY)
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_nearest_trusted_hop() {
        let trusted = trusted("10.0.0.0/8");
        for value in [
            "203.0.113.9, not-an-ip, 10.0.0.7",
            "203.0.113.9, , 10.0.0.7",
            "203.0.113.9, 300.1.2.3, 10.0.0.7",
        ] {
            assert_eq!(
                client_ip(ip(PROXY), &xff(&[value]), &trusted),
                ip("10.0.0.7"),
                "{value}"
            );
        }
        assert_eq!(
            client_ip(ip(PROXY), &xff(&["garbage"]), &trusted),
            ip(PROXY)
        );
    }

    #[test]
    fn forwarded_for_entries_may_carry_ports() {
        let headers = xff(&["203.0.113.9:4711, [2001:db8::1]:80"]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted(PROXY)),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let trusted = trusted("10.0.0.0/8");
        let cases = [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"192.0.2.43:47011\"", "192.0.2.43"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            ("for=192.0.2.43, for=10.0.0.9;proto=https", "192.0.2.43"),
            (
                "proto=https;for=192.0.2.43 , by=10.0.0.1;for=10.0.0.2",
                "192.0.2.43",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                client_ip(ip(PROXY), &forwarded(value), &trusted),
                ip(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn unknown_and_obfuscated_forwarded_nodes_end_the_walk() {
        let trusted = trusted("10.0.0.0/8");
        for value in [
            "for=192.0.2.43, for=unknown, for=10.0.0.9",
            "for=192.0.2.43, for=_hidden, for=10.0.0.9",
            "for=192.0.2.43, proto=https, for=10.0.0.9",
        ] {
            assert_eq!(
                client_ip(ip(PROXY), &forwarded(value), &trusted),
                ip("10.0.0.9"),
                "{value}"
            );
        }
    }

    #[test]
    fn a_quoted_comma_does_not_split_a_forwarded_element() {
        let headers = forwarded("for=192.0.2.43;ext=\"a,b\", for=10.0.0.9");
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted("10.0.0.0/8")),
            ip("192.0.2.43")
        );
    }

    #[test]
    fn x_forwarded_for_wins_over_forwarded() {
        let headers = headers(&[
            (FORWARDED, "for=192.0.2.43"),
            (X_FORWARDED_FOR, "203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip(PROXY), &headers, &trusted(PROXY)),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        assert_eq!(
            client_ip(
                ip("::ffff:198.51.100.7"),
                &HeaderMap::new(),
                &TrustedProxies::default()
            ),
            ip("198.51.100.7")
        );
        // A mapped peer matches an IPv4 trusted network, and mapped entries come out as IPv4.
        let headers = xff(&["::ffff:203.0.113.9"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &headers, &trusted("10.0.0.0/8")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_subjects_are_their_64() {
        assert_eq!(subject(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(
            subject(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            subject(ip("2001:db8:1:2::1")),
            subject(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            subject(ip("2001:db8:1:2::1")),
            subject(ip("2001:db8:1:3::1"))
        );
        assert_eq!(subject(ip("::ffff:203.0.113.9")), "203.0.113.9");
    }
}
