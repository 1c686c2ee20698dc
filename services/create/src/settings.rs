//! Settings of `kurz-create`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;
use kurz_settings::{
    DatabaseSettings, HttpSettings, RedisSettings, SettingsError, Source, TelemetrySettings, flag,
    in_range, positive_millis, positive_secs,
};
use serde::Deserialize;

/// The local stack's create API listens here.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub links: LinkSettings,
    pub access: AccessSettings,
    pub url_safety: UrlSafetySettings,
}

/// Who may call the API, and how often.
#[derive(Debug, Clone, Copy)]
pub struct AccessSettings {
    /// `KURZ_ANONYMOUS_CREATE`: whether requests without credentials may create links (default
    /// false). For a public shorten page; such links have no owner, and only an admin can
    /// read or delete them through the API.
    pub anonymous_create: bool,
    /// `KURZ_API_KEY_CACHE_TTL_MS`: how long a verified key is trusted without asking
    /// PostgreSQL (default 10,000 ms). Revocations reach every instance at once over Redis
    /// pub/sub; this bounds what a lost message costs.
    pub key_cache_ttl: Duration,
    /// `KURZ_RATE_LIMIT_PER_MINUTE`: requests a minute per API key, unless the key says
    /// otherwise (default 600). The whole minute's quota may be spent in one burst.
    pub key_rate_limit: u32,
    /// `KURZ_ANONYMOUS_RATE_LIMIT_PER_MINUTE`: requests a minute per client IP without a key
    /// (default 30).
    pub anonymous_rate_limit: u32,
    /// `KURZ_AUTH_FAILURE_LIMIT_PER_MINUTE`: failed authentications a minute per client IP
    /// (default 20). Past it, every request from that IP is refused 429 until its minute
    /// passes, even with a valid key: guessing keys gets nowhere.
    pub auth_failure_limit: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// `KURZ_MAX_URL_LENGTH`: longest target URL in bytes, before and after normalization
    /// (default 8,192: what common servers and CDNs accept in a request line).
    pub max_url_length: usize,
    /// `KURZ_KEY_BATCH_SIZE`: keys claimed from the pool per round trip (default 1,000). A
    /// crashed instance loses at most this many unused keys, out of trillions.
    pub key_batch_size: usize,
    /// `KURZ_CACHE_TTL_SECS`: how long Redis keeps a link written at creation (default
    /// 3,600 s, as the redirect service).
    pub cache_ttl: Duration,
    /// `KURZ_INSERT_BATCH_MAX`: most links one group-commit statement carries (default 256).
    pub insert_batch_max: usize,
    /// `KURZ_BULK_MAX_ITEMS`: most links one `POST /api/v1/links/bulk` may carry (default 100,
    /// at most 1,000). Each item is a request of the caller's rate limit, and all of them are
    /// one transaction, so this bounds both a call's body and how long it holds its locks.
    pub bulk_max_items: usize,
}

impl LinkSettings {
    /// Request bodies larger than this are refused with 413: the longest URL plus room for the
    /// alias, the expiry and JSON punctuation.
    pub fn body_limit(&self) -> usize {
        self.max_url_length + 4_096
    }

    /// The bulk endpoint's body limit: one create body per item, however long their URLs.
    pub fn bulk_body_limit(&self) -> usize {
        self.body_limit() * self.bulk_max_items
    }
}

/// Which targets are refused beyond the URL's shape (see `crate::validate::targets` and
/// `crate::blocklist`).
#[derive(Debug, Clone, Default)]
pub struct UrlSafetySettings {
    /// `KURZ_ALLOW_PRIVATE_TARGETS`: accept targets on `localhost` and on loopback, private,
    /// link-local, CGNAT, multicast and unspecified addresses (default false). For intranet
    /// deployments, where links to such hosts are the point.
    pub allow_private_targets: bool,
    /// `KURZ_BLOCKLIST_FILE`: domains refused as targets, one a line, re-read when the file
    /// changes (default unset: the built-in list of link shorteners). Read at start.
    pub blocklist_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    max_url_length: Option<usize>,
    key_batch_size: Option<usize>,
    cache_ttl_secs: Option<u64>,
    insert_batch_max: Option<usize>,
    bulk_max_items: Option<usize>,
    anonymous_create: Option<Value>,
    api_key_cache_ttl_ms: Option<u64>,
    rate_limit_per_minute: Option<u32>,
    anonymous_rate_limit_per_minute: Option<u32>,
    auth_failure_limit_per_minute: Option<u32>,
    /// Raw, for [`flag`]: `true` arrives as a boolean but `TRUE` as a string.
    allow_private_targets: Option<Value>,
    blocklist_file: Option<String>,
}

/// Allowed per-minute limits: at least one request, at most a million.
const RATE_LIMITS: std::ops::RangeInclusive<u32> = 1..=1_000_000;

impl Settings {
    /// Every `KURZ_*` variable `kurz-create` reads: its own and the shared groups'.
    pub fn variables() -> BTreeSet<String> {
        kurz_settings::variables::of_binary::<Vars>(kurz_settings::variables::HTTP_SERVICE_GROUPS)
    }

    /// Reads the create service's settings: the groups every service shares (`KURZ_DATABASE_*`,
    /// `KURZ_BREAKER_*`, `KURZ_REDIS_*`, `KURZ_LISTEN`, `KURZ_PUBLIC_BASE_URL`, telemetry; see
    /// `kurz_settings`), and its own:
    ///
    /// | Variable | Default | Unit, range |
    /// | --- | --- | --- |
    /// | `KURZ_MAX_URL_LENGTH` | 8,192 | bytes, 32 to 1,048,576 |
    /// | `KURZ_KEY_BATCH_SIZE` | 1,000 | keys, 1 to 100,000 |
    /// | `KURZ_CACHE_TTL_SECS` | 3,600 | seconds, at least 1 |
    /// | `KURZ_INSERT_BATCH_MAX` | 256 | links, 1 to 10,000 |
    /// | `KURZ_BULK_MAX_ITEMS` | 100 | links per bulk call, 1 to 1,000 |
    /// | `KURZ_ALLOW_PRIVATE_TARGETS` | false | `true` or `false` |
    /// | `KURZ_BLOCKLIST_FILE` | unset: the built-in list of link shorteners | a file path |
    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let max_url_length = in_range(
            "KURZ_MAX_URL_LENGTH",
            vars.max_url_length.unwrap_or(8_192),
            32..=1_048_576,
        )?;
        let key_batch_size = in_range(
            "KURZ_KEY_BATCH_SIZE",
            vars.key_batch_size.unwrap_or(1_000),
            1..=100_000,
        )?;
        let cache_ttl = positive_secs("KURZ_CACHE_TTL_SECS", vars.cache_ttl_secs.unwrap_or(3_600))?;
        let access = AccessSettings {
            anonymous_create: flag("KURZ_ANONYMOUS_CREATE", vars.anonymous_create)?,
            key_cache_ttl: positive_millis(
                "KURZ_API_KEY_CACHE_TTL_MS",
                vars.api_key_cache_ttl_ms.unwrap_or(10_000),
            )?,
            key_rate_limit: in_range(
                "KURZ_RATE_LIMIT_PER_MINUTE",
                vars.rate_limit_per_minute.unwrap_or(600),
                RATE_LIMITS,
            )?,
            anonymous_rate_limit: in_range(
                "KURZ_ANONYMOUS_RATE_LIMIT_PER_MINUTE",
                vars.anonymous_rate_limit_per_minute.unwrap_or(30),
                RATE_LIMITS,
            )?,
            auth_failure_limit: in_range(
                "KURZ_AUTH_FAILURE_LIMIT_PER_MINUTE",
                vars.auth_failure_limit_per_minute.unwrap_or(20),
                RATE_LIMITS,
            )?,
        };
        Ok(Self {
            access,
            database: DatabaseSettings::from_source(source)?,
            redis: RedisSettings::from_source(source)?,
            http: HttpSettings::from_source(source, DEFAULT_LISTEN)?,
            telemetry: TelemetrySettings::from_source(source)?,
            links: LinkSettings {
                max_url_length,
                key_batch_size,
                cache_ttl,
                insert_batch_max: in_range(
                    "KURZ_INSERT_BATCH_MAX",
                    vars.insert_batch_max.unwrap_or(256),
                    1..=10_000,
                )?,
                bulk_max_items: in_range(
                    "KURZ_BULK_MAX_ITEMS",
                    vars.bulk_max_items.unwrap_or(100),
                    1..=1_000,
                )?,
            },
            url_safety: UrlSafetySettings {
                allow_private_targets: flag(
                    "KURZ_ALLOW_PRIVATE_TARGETS",
                    vars.allow_private_targets,
                )?,
                blocklist_file: vars.blocklist_file.map(PathBuf::from),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_8081_with_an_8_kib_url_limit() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.http.listen.port(), 8081);
        assert_eq!(s.links.max_url_length, 8_192);
    }

    #[test]
    fn access_defaults_need_a_key_and_allow_600_a_minute() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert!(!s.access.anonymous_create);
        assert_eq!(s.access.key_rate_limit, 600);
        assert_eq!(s.access.anonymous_rate_limit, 30);
        assert_eq!(s.access.auth_failure_limit, 20);
    }

    #[test]
    fn a_zero_rate_limit_is_refused() {
        let err = Settings::from_source(&Source::from_vars([("KURZ_RATE_LIMIT_PER_MINUTE", "0")]))
            .expect_err("must fail");
        assert!(
            err.to_string().contains("KURZ_RATE_LIMIT_PER_MINUTE"),
            "{err}"
        );
    }

    #[test]
    fn url_safety_defaults_to_refusing_private_targets_with_the_built_in_blocklist() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert!(!s.url_safety.allow_private_targets);
        assert_eq!(s.url_safety.blocklist_file, None);
    }

    #[test]
    fn url_safety_variables_are_read() {
        let s = Settings::from_source(&Source::from_vars([
            ("KURZ_ALLOW_PRIVATE_TARGETS", "TRUE"),
            ("KURZ_BLOCKLIST_FILE", "/etc/kurz/blocklist.txt"),
        ]))
        .expect("valid");
        assert!(s.url_safety.allow_private_targets);
        assert_eq!(
            s.url_safety.blocklist_file.as_deref(),
            Some(std::path::Path::new("/etc/kurz/blocklist.txt"))
        );
        let off = Source::from_vars([("KURZ_ALLOW_PRIVATE_TARGETS", "false")]);
        assert!(
            !Settings::from_source(&off)
                .expect("valid")
                .url_safety
                .allow_private_targets
        );
    }

    #[test]
    fn a_private_targets_flag_that_is_not_true_or_false_is_refused() {
        let source = Source::from_vars([("KURZ_ALLOW_PRIVATE_TARGETS", "yes")]);
        let err = Settings::from_source(&source).expect_err("must fail");
        assert!(
            err.to_string().contains("KURZ_ALLOW_PRIVATE_TARGETS"),
            "{err}"
        );
    }

    #[test]
    fn bulk_calls_carry_100_items_by_default_and_1000_at_most() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.links.bulk_max_items, 100);
        assert_eq!(s.links.bulk_body_limit(), 100 * s.links.body_limit());
        for bad in ["0", "1001"] {
            let source = Source::from_vars([("KURZ_BULK_MAX_ITEMS", bad)]);
            let err = Settings::from_source(&source).expect_err("must fail");
            assert!(err.to_string().contains("KURZ_BULK_MAX_ITEMS"), "{err}");
        }
    }

    #[test]
    fn a_zero_batch_is_refused() {
        let err = Settings::from_source(&Source::from_vars([("KURZ_KEY_BATCH_SIZE", "0")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("KURZ_KEY_BATCH_SIZE"), "{err}");
    }
}
