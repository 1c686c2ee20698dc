//! Which hosts are private: reachable only from inside some network. A short link to one works
//! for nobody else, and it points every browser (and every link-preview fetcher) that follows
//! it at whatever answers on that address there: a router, a cloud metadata service, the
//! reader's own machine. `KURZ_ALLOW_PRIVATE_TARGETS` turns the check off for intranets.
//!
//! Only what the URL itself says is checked: a public name that resolves to a private address
//! is not caught (that needs a DNS lookup, which would put the resolver on the create path and
//! still lose to DNS rebinding).

use std::net::{Ipv4Addr, Ipv6Addr};

/// `localhost` and every name under it, which resolve to loopback (RFC 6761). `name` is lower
/// case without a trailing dot.
pub fn is_local_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Loopback, private, link-local, CGNAT, multicast, "this network" and broadcast.
pub fn is_private_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16, cloud metadata services among others
        || ip.is_multicast() // 224/4
        || ip.is_broadcast() // 255.255.255.255
        // All of 0/8 ("this network", RFC 1122), not just `is_unspecified`'s 0.0.0.0: Linux
        // connects 0.0.0.0 to the local host, and no 0.x address is a public target.
        || a == 0
        // 100.64/10, shared address space for carrier-grade NAT (RFC 6598):
        // `Ipv4Addr::is_shared` is not stable yet.
        || (a == 100 && b & 0b1100_0000 == 64)
}

/// Loopback, unspecified, unique-local, link-local, site-local and multicast, and any IPv6
/// address that stands for a private IPv4 one.
pub fn is_private_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_private_ipv4(v4);
    }
    ip.is_loopback() // ::1
        || ip.is_unspecified() // ::
        || ip.is_unique_local() // fc00::/7
        || ip.is_unicast_link_local() // fe80::/10
        || ip.is_multicast() // ff00::/8
        // fec0::/10, site-local: deprecated (RFC 3879) but what older networks use as
        // private space; std has no method for it.
        || ip.segments()[0] & 0xffc0 == 0xfec0
}

/// The IPv4 address an IPv6 one reaches: IPv4-mapped `::ffff:a.b.c.d` (how a dual-stack host
/// reaches IPv4), the deprecated IPv4-compatible `::a.b.c.d`, and NAT64's well-known prefix
/// `64:ff9b::a.b.c.d` (RFC 6052), which a NAT64 gateway translates to a.b.c.d. `::1` and `::`
/// come out as 0.0.0.1 and 0.0.0.0, which are private too.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    // `to_ipv4` covers both the mapped and the compatible form.
    if let Some(v4) = ip.to_ipv4() {
        return Some(v4);
    }
    let [.., a, b, c, d] = ip.octets();
    (ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| Ipv4Addr::new(a, b, c, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> bool {
        is_private_ipv4(s.parse().expect("an IPv4 address"))
    }

    fn v6(s: &str) -> bool {
        is_private_ipv6(s.parse().expect("an IPv6 address"))
    }

    /// Each range's first and last address are private, and the addresses just outside it
    /// are not.
    #[test]
    fn ipv4_ranges_end_where_they_should() {
        let ranges = [
            ("0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
            (
                "10.0.0.0",
                "10.255.255.255",
                Some("9.255.255.255"),
                Some("11.0.0.0"),
            ),
            (
                "100.64.0.0",
                "100.127.255.255",
                Some("100.63.255.255"),
                Some("100.128.0.0"),
            ),
            (
                "127.0.0.0",
                "127.255.255.255",
                Some("126.255.255.255"),
                Some("128.0.0.0"),
            ),
            (
                "169.254.0.0",
                "169.254.255.255",
                Some("169.253.255.255"),
                Some("169.255.0.0"),
            ),
            (
                "172.16.0.0",
                "172.31.255.255",
                Some("172.15.255.255"),
                Some("172.32.0.0"),
            ),
            (
                "192.168.0.0",
                "192.168.255.255",
                Some("192.167.255.255"),
                Some("192.169.0.0"),
            ),
            (
                "224.0.0.0",
                "239.255.255.255",
                Some("223.255.255.255"),
                None,
            ),
        ];
        for (first, last, before, after) in ranges {
            assert!(v4(first), "{first}");
            assert!(v4(last), "{last}");
            for outside in [before, after].into_iter().flatten() {
                assert!(!v4(outside), "{outside}");
            }
        }
        assert!(v4("255.255.255.255"));
        assert!(!v4("255.255.255.254"), "240/4 is reserved, not private");
        assert!(!v4("93.184.216.34"));
        assert!(!v4("8.8.8.8"));
    }

    #[test]
    fn ipv6_ranges_end_where_they_should() {
        for private in [
            "::",
            "::1",
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "feff::1",
            "ff00::",
            "ff02::1",
        ] {
            assert!(v6(private), "{private}");
        }
        for public in [
            "fbff:ffff::1",
            "fe7f:ffff::1",
            "2001:db8::1",
            "2606:2800:220:1::",
        ] {
            assert!(!v6(public), "{public}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_follow_the_ipv4_rules() {
        for private in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::0.0.0.2",
            "64:ff9b::127.0.0.1",
            "64:ff9b::192.168.0.1",
        ] {
            assert!(v6(private), "{private}");
        }
        for public in ["::ffff:93.184.216.34", "::8.8.8.8", "64:ff9b::8.8.8.8"] {
            assert!(!v6(public), "{public}");
        }
    }

    #[test]
    fn localhost_and_names_under_it_are_local() {
        assert!(is_local_name("localhost"));
        assert!(is_local_name("foo.localhost"));
        assert!(is_local_name("a.b.localhost"));
        assert!(!is_local_name("localhost.example"));
        assert!(!is_local_name("notlocalhost"));
        assert!(!is_local_name("example.com"));
    }
}
