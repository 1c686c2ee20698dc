//! Settings of `kurz-keypool`.

use std::net::SocketAddr;
use std::time::Duration;

use kurz_settings::{
    DatabaseSettings, SettingsError, Source, TelemetrySettings, in_range, positive_millis,
    socket_addr,
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
        Ok(Self {
            metrics_listen,
            database: DatabaseSettings::from_source(source)?,
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
}
