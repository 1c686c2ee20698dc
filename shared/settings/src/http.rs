//! Settings of the two HTTP services.

use std::net::SocketAddr;

use serde::Deserialize;
use url::Url;

use std::time::Duration;

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
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    listen: Option<String>,
    public_base_url: Option<String>,
    client_request_timeout_ms: Option<u64>,
}

impl HttpSettings {
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
        Ok(Self {
            listen,
            public_base_url,
            client_request_timeout: positive_millis(
                "KURZ_CLIENT_REQUEST_TIMEOUT_MS",
                vars.client_request_timeout_ms.unwrap_or(5_000),
            )?,
        })
    }
}

fn parse_base_url(raw: &str) -> Result<Url, SettingsError> {
    const VAR: &str = "KURZ_PUBLIC_BASE_URL";
    let mut url =
        Url::parse(raw).map_err(|e| SettingsError::invalid(VAR, format!("`{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingsError::invalid(
            VAR,
            format!("`{raw}` is not an http(s) URL with a host"),
        ));
    }
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
    fn non_http_base_url_is_refused() {
        let err =
            settings(&[("KURZ_PUBLIC_BASE_URL", "ftp://kurz.example")]).expect_err("must fail");
        assert!(err.to_string().contains("KURZ_PUBLIC_BASE_URL"), "{err}");
    }
}
