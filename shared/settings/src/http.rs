//! Settings of the two HTTP services.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use url::Url;

use crate::{SettingsError, Source, positive_millis, socket_addr};

/// Default public base URL: the local stack's redirect service.
pub const DEFAULT_PUBLIC_BASE_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `KURZ_LISTEN`: `address:port` to bind; port 0 picks a free one (tests do).
    pub listen: SocketAddr,
    /// `KURZ_PUBLIC_BASE_URL`: where browsers reach the redirect service, such as
    /// `https://kurz.example`; short URLs are this plus the code (default
    /// `http://127.0.0.1:8080`).
    pub public_base_url: Url,
    /// `KURZ_CLIENT_REQUEST_TIMEOUT_MS`: how long a new connection may take to send its first
    /// request head before it is answered 408 and closed (default 5,000 ms), which keeps slow
    /// clients from holding connections open.
    pub client_request_timeout: Duration,
    /// `KURZ_TRUSTED_PROXIES`: the proxies and load balancers whose `X-Forwarded-For` or
    /// `Forwarded` headers are believed, as comma-separated CIDRs (`10.0.0.0/8, 2001:db8::/32`;
    /// a bare address is a single host). Empty by default: every client is its TCP peer, and
    /// forwarding headers are ignored, so no client can choose its own address.
    pub trusted_proxies: TrustedProxies,
}

/// The networks of the trusted proxies (see `kurz_http::client_ip`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated CIDRs or bare addresses; blanks around entries are ignored.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let nets = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let net = match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => entry.parse::<IpNet>().map_err(|_| {
                        format!("`{entry}` is neither an IP address nor a CIDR such as 10.0.0.0/8")
                    })?,
                };
                Ok(canonical_net(net.trunc()))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self(nets))
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`: addresses are compared in their canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    listen: Option<String>,
    public_base_url: Option<String>,
    client_request_timeout_ms: Option<u64>,
    trusted_proxies: Option<String>,
}

impl HttpSettings {
    /// The variables [`Self::from_source`] reads (`KURZ_LISTEN`, `KURZ_PUBLIC_BASE_URL`, ...).
    pub fn variables() -> std::collections::BTreeSet<String> {
        crate::variables::names_of::<Vars>()
    }

    /// `default_listen` differs per service: redirect 127.0.0.1:8080, create 127.0.0.1:8081.
    pub fn from_source(source: &Source, default_listen: SocketAddr) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let listen = match vars.listen {
            None => default_listen,
            Some(raw) => socket_addr("KURZ_LISTEN", &raw)?,
        };
        let raw_base = vars
            .public_base_url
            .unwrap_or_else(|| DEFAULT_PUBLIC_BASE_URL.to_owned());
        let public_base_url = parse_base_url(&raw_base)?;
        let trusted_proxies = TrustedProxies::parse(vars.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(|reason| SettingsError::invalid("KURZ_TRUSTED_PROXIES", reason))?;
        Ok(Self {
            listen,
            public_base_url,
            client_request_timeout: positive_millis(
                "KURZ_CLIENT_REQUEST_TIMEOUT_MS",
                vars.client_request_timeout_ms.unwrap_or(5_000),
            )?,
            trusted_proxies,
        })
    }
}

fn parse_base_url(raw: &str) -> Result<Url, SettingsError> {
    const VAR: &str = "KURZ_PUBLIC_BASE_URL";
    let mut url = crate::http_url(VAR, raw)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SettingsError::invalid(
            VAR,
            "must not have a query or fragment",
        ));
    }
    // Short URLs are built by appending the code, so the path must end in exactly one slash.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<HttpSettings, SettingsError> {
        let default = "127.0.0.1:8080".parse().expect("valid");
        HttpSettings::from_source(&Source::from_vars(vars.iter().copied()), default)
    }

    #[test]
    fn defaults_serve_the_local_stack() {
        let s = settings(&[]).expect("valid");
        assert_eq!(s.listen.port(), 8080);
        assert_eq!(s.public_base_url.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn base_url_gets_a_trailing_slash() {
        let s = settings(&[("KURZ_PUBLIC_BASE_URL", "https://kurz.example/s")]).expect("valid");
        assert_eq!(s.public_base_url.as_str(), "https://kurz.example/s/");
    }

    #[test]
    fn bad_listen_address_names_the_variable() {
        let err = settings(&[("KURZ_LISTEN", "localhost")]).expect_err("must fail");
        assert!(err.to_string().contains("KURZ_LISTEN"), "{err}");
    }

    #[test]
    fn no_proxy_is_trusted_by_default() {
        let s = settings(&[]).expect("valid");
        assert!(s.trusted_proxies.is_empty());
        assert!(!s.trusted_proxies.contains("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_bare_addresses() {
        let s = settings(&[(
            "KURZ_TRUSTED_PROXIES",
            " 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,::1,",
        )])
        .expect("valid");
        let trusted = |ip: &str| s.trusted_proxies.contains(ip.parse().expect("ip"));
        assert!(trusted("10.200.3.4"));
        assert!(trusted("192.168.1.7"));
        assert!(!trusted("192.168.1.8"), "a bare address is one host");
        assert!(trusted("2001:db8:ffff::1"));
        assert!(trusted("::1"));
        assert!(!trusted("11.0.0.1"));
        assert!(trusted("::ffff:10.1.2.3"), "IPv4-mapped counts as IPv4");
    }

    #[test]
    fn a_single_trusted_proxy_is_accepted() {
        let s = settings(&[("KURZ_TRUSTED_PROXIES", "127.0.0.1/32")]).expect("valid");
        assert!(s.trusted_proxies.contains("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn ipv4_mapped_networks_match_ipv4_peers() {
        let trusted = TrustedProxies::parse("::ffff:10.0.0.0/104").expect("valid");
        assert!(trusted.contains("10.9.8.7".parse().expect("ip")));
    }

    #[test]
    fn a_bad_trusted_proxy_names_the_variable() {
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8;10.1.0.0/16"] {
            let err = settings(&[("KURZ_TRUSTED_PROXIES", bad)]).expect_err("must fail");
            assert!(
                err.to_string().contains("KURZ_TRUSTED_PROXIES"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn non_http_base_url_is_refused() {
        let err =
            settings(&[("KURZ_PUBLIC_BASE_URL", "ftp://kurz.example")]).expect_err("must fail");
        assert!(err.to_string().contains("KURZ_PUBLIC_BASE_URL"), "{err}");
    }
}
