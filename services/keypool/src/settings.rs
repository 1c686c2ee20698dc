//! Settings of `kurz-keypool`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use kurz_settings::{
    DatabaseSettings, RedisSettings, SettingsError, Source, TelemetrySettings, in_range,
    positive_millis, socket_addr,
};
use serde::Deserialize;

/// Shortest and longest generated key. At 4 characters (14.8 million keys) a public pool is
/// small enough to enumerate; above 32 a short link stops being short.
const KEY_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 5..=32;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub pool: PoolSettings,
    /// `KURZ_METRICS_LISTEN`: `address:port` of the worker's `/metrics` and `/healthz`
    /// (default `127.0.0.1:9464`, the port Prometheus exporters conventionally use; port 0
    /// picks a free one).
    pub metrics_listen: SocketAddr,
}

/// How the pool is kept full.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// `KURZ_KEY_LENGTH`: characters per generated key (default 7: 62^7 = 3.5 trillion keys,
    /// so random probing finds a live link about once per million tries even with 3.5 million
    /// links).
    pub key_length: usize,
    /// `KURZ_POOL_LOW_WATERMARK`: refill when fewer unused keys remain (default 250,000: at
    /// 10,000 creates/s that is 25 s of runway, several times what a refill takes).
    pub low_watermark: u64,
    /// `KURZ_POOL_HIGH_WATERMARK`: refill up to this many (default 1,000,000: about 100 MB of
    /// table and indexes, one refill of 750,000 keys at a time).
    pub high_watermark: u64,
    /// `KURZ_POOL_CHECK_INTERVAL_MS`: how often the depth is checked (default 2,000 ms).
    pub check_interval: Duration,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    key_length: Option<usize>,
    pool_low_watermark: Option<u64>,
    pool_high_watermark: Option<u64>,
    pool_check_interval_ms: Option<u64>,
    metrics_listen: Option<String>,
}

impl Settings {
    /// Every `KURZ_*` variable `kurz-keypool` reads: its own and the shared groups'.
    /// `KURZ_REDIS_*` included: the operator commands (`accounts`, `api-keys`) read them to
    /// announce revocations, though the refill loop does not.
    pub fn variables() -> BTreeSet<String> {
        kurz_settings::variables::of_binary::<Vars>(&[
            DatabaseSettings::variables,
            TelemetrySettings::variables,
            RedisSettings::variables,
        ])
    }

    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let key_length = in_range(
            "KURZ_KEY_LENGTH",
            vars.key_length.unwrap_or(7),
            KEY_LENGTH_RANGE,
        )?;
        let low_watermark = vars.pool_low_watermark.unwrap_or(250_000);
        let high_watermark = vars.pool_high_watermark.unwrap_or(1_000_000);
        if high_watermark <= low_watermark {
            return Err(SettingsError::invalid(
                "KURZ_POOL_HIGH_WATERMARK",
                format!("{high_watermark} must be above KURZ_POOL_LOW_WATERMARK ({low_watermark})"),
            ));
        }
        let metrics_listen = socket_addr(
            "KURZ_METRICS_LISTEN",
            vars.metrics_listen.as_deref().unwrap_or("127.0.0.1:9464"),
        )?;
        let database = DatabaseSettings::from_source(source)?;
        // The worker migrates and vacuums, both over a session of their own: behind a
        // transaction pooler that needs the direct URL, so its absence fails the start rather
        // than the first VACUUM.
        database.direct_url()?;
        Ok(Self {
            metrics_listen,
            database,
            telemetry: TelemetrySettings::from_source(source)?,
            pool: PoolSettings {
                key_length,
                low_watermark,
                high_watermark,
                check_interval: positive_millis(
                    "KURZ_POOL_CHECK_INTERVAL_MS",
                    vars.pool_check_interval_ms.unwrap_or(2_000),
                )?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.pool.key_length, 7);
        assert!(s.pool.low_watermark < s.pool.high_watermark);
    }

    #[test]
    fn inverted_watermarks_are_refused() {
        let source = Source::from_vars([
            ("KURZ_POOL_LOW_WATERMARK", "100"),
            ("KURZ_POOL_HIGH_WATERMARK", "100"),
        ]);
        let err = Settings::from_source(&source).expect_err("must fail");
        assert!(
            err.to_string().contains("KURZ_POOL_HIGH_WATERMARK"),
            "{err}"
        );
    }

    #[test]
    fn too_short_keys_are_refused() {
        let err = Settings::from_source(&Source::from_vars([("KURZ_KEY_LENGTH", "3")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("KURZ_KEY_LENGTH"), "{err}");
    }

    #[test]
    fn a_transaction_pooler_without_a_direct_url_is_refused() {
        let source = Source::from_vars([("KURZ_DATABASE_POOLER", "transaction")]);
        let err = Settings::from_source(&source).expect_err("must fail");
        assert!(
            err.to_string().contains("KURZ_DATABASE_DIRECT_URL"),
            "{err}"
        );
        let source = Source::from_vars([
            ("KURZ_DATABASE_POOLER", "transaction"),
            (
                "KURZ_DATABASE_DIRECT_URL",
                "postgres://kurz@127.0.0.1:5432/kurz",
            ),
        ]);
        Settings::from_source(&source).expect("valid with a direct URL");
    }
}
