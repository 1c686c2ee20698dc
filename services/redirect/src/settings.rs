//! Settings of `kurz-redirect`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use actix_web::http::StatusCode;
use kurz_repository::cache::CacheTtl;
use kurz_settings::{
    DatabaseSettings, HttpSettings, RedisSettings, SettingsError, Source, TelemetrySettings,
    in_range, positive_millis, positive_secs,
};
use serde::Deserialize;

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
}

#[derive(Debug, Clone, Copy)]
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
}

impl RedirectSettings {
    pub fn cache_ttl(&self) -> CacheTtl {
        CacheTtl {
            found: self.cache_ttl,
            missing: self.negative_cache_ttl,
        }
    }
}

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
}

impl Settings {
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
        Ok(Self {
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
            },
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
}
