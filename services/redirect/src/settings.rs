//! Settings of `kurz-redirect`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use actix_web::http::StatusCode;
use kurz_repository::cache::CacheTtl;
use kurz_repository::clicks::{DEFAULT_STREAMS, MAX_STREAMS};
use kurz_settings::{
    DatabaseSettings, HttpSettings, RedisSettings, SettingsError, Source, TelemetrySettings,
    http_url, in_range, positive_millis, positive_secs,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The local stack serves redirects here.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub redirect: RedirectSettings,
    pub clicks: ClickSettings,
}

#[derive(Debug, Clone)]
pub struct RedirectSettings {
    /// `KURZ_REDIRECT_STATUS`: 301, 302 (default), 307 or 308, for links without a
    /// `redirect_status` of their own. 302 because a temporary redirect is re-asked by
    /// browsers, so deletes and edits take effect and clicks are seen; a 301 is kept.
    pub status: StatusCode,
    /// `KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS`: the `max-age` of 301 and 308 redirects
    /// (`private`, never past the link's expiry; default 300 s, 0 to 31,536,000; 0 sends
    /// `no-store`). It bounds how long a browser keeps following an edited or deleted link
    /// without asking. Temporary redirects are always `no-store`.
    pub permanent_max_age: Duration,
    /// `KURZ_CACHE_TTL_SECS`: how long Redis keeps a link (default 3,600 s).
    pub cache_ttl: Duration,
    /// `KURZ_NEGATIVE_CACHE_TTL_SECS`: how long Redis remembers an unknown code (default 10 s),
    /// so a flood of random codes costs PostgreSQL one lookup per code per period.
    pub negative_cache_ttl: Duration,
    /// `KURZ_LOCAL_CACHE_TTL_MS`: how long this process keeps an answer in memory (default
    /// 5,000 ms). Deletes reach every instance at once over pub/sub; this bounds the cost of a
    /// lost message.
    pub local_cache_ttl: Duration,
    /// `KURZ_LOCAL_CACHE_CAPACITY`: answers kept in memory (default 100,000, tens of MB).
    pub local_cache_capacity: u64,
    /// `KURZ_SCAN_BUDGET`: lookups of codes that do not exist one client IP may make per
    /// window, across every instance (default 100, 0 to 1,000,000); past it the IP gets 429
    /// for every code until its window ends. 0 switches scan resistance off, for a
    /// deployment whose clients all arrive from a few addresses it cannot tell apart (no
    /// `KURZ_TRUSTED_PROXIES` for its balancer).
    pub scan_budget: u32,
    /// `KURZ_SCAN_WINDOW_SECS`: the window of `KURZ_SCAN_BUDGET`, starting at an IP's first
    /// miss (default 60 s, at least 1, at most 86,400).
    pub scan_window: Duration,
    /// `KURZ_HOME_URL`: where `/` sends people, an http(s) URL (the web page, once nginx puts
    /// it at the short domain's root, or a marketing site). Unset: `/` is 404, as any path
    /// that is not a code.
    pub home_url: Option<Url>,
}

impl RedirectSettings {
    pub fn cache_ttl(&self) -> CacheTtl {
        CacheTtl {
            found: self.cache_ttl,
            missing: self.negative_cache_ttl,
        }
    }
}

/// Click capture (see `crate::clicks`).
#[derive(Debug, Clone)]
pub struct ClickSettings {
    /// `KURZ_CLICK_CAPTURE`: `on` (default) or `off`. Off builds no queue and no shipper, so
    /// a redirect costs what it did before click analytics (the bench compares the two).
    pub capture: bool,
    /// `KURZ_CLICK_QUEUE_CAPACITY`: clicks held in memory on their way to Redis (default
    /// 65,536, 1 to 10,000,000; at most about 1.1 KB each, and the 128-byte slots are
    /// allocated at start, 8 MB at the default). Past it, clicks are dropped and
    /// counted (`kurz_click_events_dropped_total{reason="queue_full"}`), never waited for.
    pub queue_capacity: usize,
    /// `KURZ_CLICK_BATCH`: the most clicks sent to Redis in one stream entry (default 512, 1
    /// to 10,000).
    pub batch: usize,
    /// `KURZ_CLICK_STREAMS`: the streams clicks are spread over, round-robin by batch
    /// (default 8, 1 to 256). The analytics worker reads the same variable; both must agree.
    pub streams: u16,
    /// `KURZ_CLICK_STREAM_MAXLEN`: about how many clicks each stream keeps (default 100,000,
    /// 1,000 to 1,000,000,000). An entry is a batch, so each `XADD` of n clicks trims its
    /// stream to this many ÷ n entries (`MAXLEN ~`): at a steady rate the stream holds about
    /// this many clicks. Bounds Redis memory when the analytics worker is down: older clicks
    /// are lost, not Redis.
    pub stream_maxlen: usize,
    /// `KURZ_VISITOR_HASH_SECRET`: the secret the daily visitor-hash keys derive from, at least
    /// 32 bytes, the same on every instance. Unset: each process draws its own at start and
    /// warns, and a visitor seen by two instances counts as two unique visitors.
    pub visitor_secret: Option<SecretString>,
}

/// Shortest accepted `KURZ_VISITOR_HASH_SECRET`: 32 bytes, so the key cannot be guessed from
/// the hashes (an attacker who knows an IP and User-Agent could test guesses offline).
pub const MIN_VISITOR_SECRET_BYTES: usize = 32;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    redirect_status: Option<u16>,
    permanent_redirect_max_age_secs: Option<u64>,
    cache_ttl_secs: Option<u64>,
    negative_cache_ttl_secs: Option<u64>,
    local_cache_ttl_ms: Option<u64>,
    local_cache_capacity: Option<u64>,
    scan_budget: Option<u32>,
    scan_window_secs: Option<u64>,
    home_url: Option<String>,
    click_capture: Option<String>,
    click_queue_capacity: Option<usize>,
    click_batch: Option<usize>,
    click_streams: Option<u16>,
    click_stream_maxlen: Option<usize>,
    visitor_hash_secret: Option<SecretString>,
}

impl Settings {
    /// Every `KURZ_*` variable `kurz-redirect` reads: its own and the shared groups'.
    pub fn variables() -> BTreeSet<String> {
        kurz_settings::variables::of_binary::<Vars>(kurz_settings::variables::HTTP_SERVICE_GROUPS)
    }

    /// Reads the redirect service's settings: the groups every service shares
    /// (`KURZ_DATABASE_*`, `KURZ_BREAKER_*`, `KURZ_REDIS_*`, `KURZ_LISTEN`,
    /// `KURZ_TRUSTED_PROXIES`, telemetry; see `kurz_settings`), and its own:
    ///
    /// | Variable | Default | Unit, range |
    /// | --- | --- | --- |
    /// | `KURZ_REDIRECT_STATUS` | 302 | 301, 302, 307 or 308 |
    /// | `KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS` | 300 | seconds, 0 (`no-store`) to 31,536,000 |
    /// | `KURZ_CACHE_TTL_SECS` | 3,600 | seconds, at least 1 |
    /// | `KURZ_NEGATIVE_CACHE_TTL_SECS` | 10 | seconds, at least 1 |
    /// | `KURZ_LOCAL_CACHE_TTL_MS` | 5,000 | milliseconds, at least 1 |
    /// | `KURZ_LOCAL_CACHE_CAPACITY` | 100,000 | answers |
    /// | `KURZ_SCAN_BUDGET` | 100 | unknown codes per window, 0 (off) to 1,000,000 |
    /// | `KURZ_SCAN_WINDOW_SECS` | 60 | seconds, 1 to 86,400 |
    /// | `KURZ_HOME_URL` | unset (`/` is 404) | an http(s) URL that `/` answers with a 302 to |
    /// | `KURZ_CLICK_CAPTURE` | `on` | `on` or `off` |
    /// | `KURZ_CLICK_QUEUE_CAPACITY` | 65,536 | clicks, 1 to 10,000,000 |
    /// | `KURZ_CLICK_BATCH` | 512 | clicks per stream entry, 1 to 10,000 |
    /// | `KURZ_CLICK_STREAMS` | 8 | streams, 1 to 256 (the analytics worker's must match) |
    /// | `KURZ_CLICK_STREAM_MAXLEN` | 100,000 | clicks per stream (approximate), 1,000 to 1,000,000,000 |
    /// | `KURZ_VISITOR_HASH_SECRET` | a random one per process, with a warning | secret, at least 32 bytes |
    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let status = match vars.redirect_status.unwrap_or(302) {
            code @ (301 | 302 | 307 | 308) => StatusCode::from_u16(code).expect("valid status"),
            other => {
                return Err(SettingsError::invalid(
                    "KURZ_REDIRECT_STATUS",
                    format!("{other} is not one of 301, 302, 307, 308"),
                ));
            }
        };
        let clicks = ClickSettings::from_vars(&vars)?;
        Ok(Self {
            clicks,
            database: DatabaseSettings::from_source(source)?,
            redis: RedisSettings::from_source(source)?,
            http: HttpSettings::from_source(source, DEFAULT_LISTEN)?,
            telemetry: TelemetrySettings::from_source(source)?,
            redirect: RedirectSettings {
                status,
                permanent_max_age: Duration::from_secs(in_range(
                    "KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS",
                    vars.permanent_redirect_max_age_secs.unwrap_or(300),
                    0..=31_536_000,
                )?),
                cache_ttl: positive_secs(
                    "KURZ_CACHE_TTL_SECS",
                    vars.cache_ttl_secs.unwrap_or(3_600),
                )?,
                negative_cache_ttl: positive_secs(
                    "KURZ_NEGATIVE_CACHE_TTL_SECS",
                    vars.negative_cache_ttl_secs.unwrap_or(10),
                )?,
                local_cache_ttl: positive_millis(
                    "KURZ_LOCAL_CACHE_TTL_MS",
                    vars.local_cache_ttl_ms.unwrap_or(5_000),
                )?,
                local_cache_capacity: vars.local_cache_capacity.unwrap_or(100_000),
                scan_budget: in_range(
                    "KURZ_SCAN_BUDGET",
                    vars.scan_budget.unwrap_or(100),
                    0..=1_000_000,
                )?,
                scan_window: Duration::from_secs(in_range(
                    "KURZ_SCAN_WINDOW_SECS",
                    vars.scan_window_secs.unwrap_or(60),
                    1..=86_400,
                )?),
                home_url: vars
                    .home_url
                    .as_deref()
                    .map(|raw| http_url("KURZ_HOME_URL", raw))
                    .transpose()?,
            },
        })
    }
}

impl ClickSettings {
    fn from_vars(vars: &Vars) -> Result<Self, SettingsError> {
        let capture = match vars.click_capture.as_deref().map(str::trim) {
            None => true,
            Some(on) if on.eq_ignore_ascii_case("on") => true,
            Some(off) if off.eq_ignore_ascii_case("off") => false,
            Some(other) => {
                return Err(SettingsError::invalid(
                    "KURZ_CLICK_CAPTURE",
                    format!("`{other}` is not on or off"),
                ));
            }
        };
        let visitor_secret = vars.visitor_hash_secret.clone();
        if let Some(secret) = &visitor_secret
            && secret.expose_secret().len() < MIN_VISITOR_SECRET_BYTES
        {
            // The value itself stays out of the message.
            return Err(SettingsError::invalid(
                "KURZ_VISITOR_HASH_SECRET",
                format!("must be at least {MIN_VISITOR_SECRET_BYTES} bytes"),
            ));
        }
        Ok(Self {
            capture,
            queue_capacity: in_range(
                "KURZ_CLICK_QUEUE_CAPACITY",
                vars.click_queue_capacity.unwrap_or(65_536),
                1..=10_000_000,
            )?,
            batch: in_range(
                "KURZ_CLICK_BATCH",
                vars.click_batch.unwrap_or(512),
                1..=10_000,
            )?,
            streams: in_range(
                "KURZ_CLICK_STREAMS",
                vars.click_streams.unwrap_or(DEFAULT_STREAMS),
                1..=MAX_STREAMS,
            )?,
            stream_maxlen: in_range(
                "KURZ_CLICK_STREAM_MAXLEN",
                vars.click_stream_maxlen.unwrap_or(100_000),
                1_000..=1_000_000_000,
            )?,
            visitor_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_redirect_with_302_on_port_8080() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.redirect.status, StatusCode::FOUND);
        assert_eq!(s.http.listen.port(), 8080);
    }

    #[test]
    fn permanent_redirects_are_kept_five_minutes_by_default_and_at_most_a_year() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.redirect.permanent_max_age, Duration::from_secs(300));
        let var = "KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS";
        let zero = Settings::from_source(&Source::from_vars([(var, "0")])).expect("valid");
        assert_eq!(zero.redirect.permanent_max_age, Duration::ZERO);
        let err =
            Settings::from_source(&Source::from_vars([(var, "31536001")])).expect_err("must fail");
        assert!(err.to_string().contains(var), "{err}");
    }

    #[test]
    fn scan_resistance_allows_100_misses_a_minute_by_default() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.redirect.scan_budget, 100);
        assert_eq!(s.redirect.scan_window, Duration::from_secs(60));
        assert!(s.http.trusted_proxies.is_empty());
    }

    #[test]
    fn a_scan_budget_of_zero_is_accepted_and_a_zero_window_is_not() {
        let off = Settings::from_source(&Source::from_vars([("KURZ_SCAN_BUDGET", "0")]));
        assert_eq!(off.expect("valid").redirect.scan_budget, 0);
        for (var, value) in [
            ("KURZ_SCAN_WINDOW_SECS", "0"),
            ("KURZ_SCAN_WINDOW_SECS", "86401"),
            ("KURZ_SCAN_BUDGET", "1000001"),
        ] {
            let err =
                Settings::from_source(&Source::from_vars([(var, value)])).expect_err("must fail");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn only_redirect_statuses_are_accepted() {
        for ok in ["301", "302", "307", "308"] {
            let s = Settings::from_source(&Source::from_vars([("KURZ_REDIRECT_STATUS", ok)]));
            assert!(s.is_ok(), "{ok}");
        }
        let err = Settings::from_source(&Source::from_vars([("KURZ_REDIRECT_STATUS", "200")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("KURZ_REDIRECT_STATUS"), "{err}");
    }

    #[test]
    fn clicks_are_captured_by_default_in_batches_of_512_over_8_streams() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        let clicks = s.clicks;
        assert!(clicks.capture);
        assert_eq!(clicks.queue_capacity, 65_536);
        assert_eq!(clicks.batch, 512);
        assert_eq!(clicks.streams, DEFAULT_STREAMS);
        assert_eq!(clicks.stream_maxlen, 100_000);
        assert!(clicks.visitor_secret.is_none());
    }

    #[test]
    fn click_capture_is_on_or_off_and_nothing_else() {
        let read = |v| Settings::from_source(&Source::from_vars([("KURZ_CLICK_CAPTURE", v)]));
        assert!(!read("off").expect("valid").clicks.capture);
        assert!(read("ON").expect("valid").clicks.capture);
        let err = read("no").expect_err("must fail");
        assert!(err.to_string().contains("KURZ_CLICK_CAPTURE"), "{err}");
    }

    #[test]
    fn click_sizes_outside_their_ranges_stop_the_service() {
        for (var, value) in [
            ("KURZ_CLICK_QUEUE_CAPACITY", "0"),
            ("KURZ_CLICK_QUEUE_CAPACITY", "10000001"),
            ("KURZ_CLICK_BATCH", "0"),
            ("KURZ_CLICK_BATCH", "10001"),
            ("KURZ_CLICK_STREAMS", "0"),
            ("KURZ_CLICK_STREAMS", "257"),
            ("KURZ_CLICK_STREAM_MAXLEN", "999"),
            ("KURZ_CLICK_STREAM_MAXLEN", "1000000001"),
        ] {
            let err =
                Settings::from_source(&Source::from_vars([(var, value)])).expect_err("must fail");
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        let edges = Settings::from_source(&Source::from_vars([
            ("KURZ_CLICK_QUEUE_CAPACITY", "1"),
            ("KURZ_CLICK_BATCH", "10000"),
            ("KURZ_CLICK_STREAMS", "256"),
            ("KURZ_CLICK_STREAM_MAXLEN", "1000"),
        ]))
        .expect("the range ends are valid");
        assert_eq!(edges.clicks.queue_capacity, 1);
        assert_eq!(edges.clicks.batch, 10_000);
        assert_eq!(edges.clicks.streams, MAX_STREAMS);
        assert_eq!(edges.clicks.stream_maxlen, 1_000);
    }

    #[test]
    fn a_home_url_must_be_an_absolute_http_url() {
        for bad in ["kurz.example", "/app", "ftp://kurz.example/", "https://"] {
            let err = Settings::from_source(&Source::from_vars([("KURZ_HOME_URL", bad)]))
                .expect_err("must fail");
            assert!(err.to_string().contains("KURZ_HOME_URL"), "{bad}: {err}");
        }
        let set = Settings::from_source(&Source::from_vars([(
            "KURZ_HOME_URL",
            "https://kurz.example/app",
        )]))
        .expect("valid");
        let home = set.redirect.home_url.expect("set");
        assert_eq!(home.as_str(), "https://kurz.example/app");
        let unset = Settings::from_source(&Source::from_vars::<&str, &str>([])).expect("valid");
        assert_eq!(unset.redirect.home_url, None);
    }

    #[test]
    fn a_visitor_secret_shorter_than_32_bytes_is_refused_without_showing_it() {
        let short = "s3cret-but-only-31-bytes-long!!";
        assert_eq!(short.len(), 31);
        let err = Settings::from_source(&Source::from_vars([("KURZ_VISITOR_HASH_SECRET", short)]))
            .expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("KURZ_VISITOR_HASH_SECRET"), "{message}");
        assert!(!message.contains(short), "{message}");
        let long = format!("{short}!");
        let s = Settings::from_source(&Source::from_vars([(
            "KURZ_VISITOR_HASH_SECRET",
            long.as_str(),
        )]))
        .expect("32 bytes are enough");
        assert!(
            !format!("{:?}", s.clicks).contains(short),
            "Debug hides the secret"
        );
        let secret = s.clicks.visitor_secret.expect("kept");
        assert_eq!(secret.expose_secret(), long);
    }
}
