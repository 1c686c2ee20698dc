//! Redis connection settings.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::{SettingsError, Source, in_range, positive_millis};

/// Default for the local stack (`infra/local/run`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:56379";

/// How a service reaches its Redis cache. Redis is only ever a cache, so its budgets are small:
/// a slow Redis must cost a request milliseconds, not seconds.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `KURZ_REDIS_URL`, a `redis://` URL (default: the local stack's).
    pub url: SecretString,
    /// `KURZ_REDIS_POOL_SIZE`: multiplexed connections per process (default 4; each one carries
    /// many requests at once, so a handful is plenty).
    pub pool_size: usize,
    /// `KURZ_REDIS_CONNECT_TIMEOUT_MS` (default 500 ms).
    pub connect_timeout: Duration,
    /// `KURZ_REDIS_COMMAND_TIMEOUT_MS`: the whole budget of one cache call, pool wait included
    /// (default 50 ms: a cache that answers slower than a database lookup is not worth
    /// waiting for).
    pub command_timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    redis_url: Option<SecretString>,
    redis_pool_size: Option<usize>,
    redis_connect_timeout_ms: Option<u64>,
    redis_command_timeout_ms: Option<u64>,
}

impl RedisSettings {
    /// The variables [`Self::from_source`] reads (`KURZ_REDIS_*`).
    pub fn variables() -> std::collections::BTreeSet<String> {
        crate::variables::names_of::<Vars>()
    }

    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let pool_size = in_range(
            "KURZ_REDIS_POOL_SIZE",
            vars.redis_pool_size.unwrap_or(4),
            1..=1_000,
        )?;
        Ok(Self {
            url: vars
                .redis_url
                .unwrap_or_else(|| SecretString::from(DEFAULT_REDIS_URL)),
            pool_size,
            connect_timeout: positive_millis(
                "KURZ_REDIS_CONNECT_TIMEOUT_MS",
                vars.redis_connect_timeout_ms.unwrap_or(500),
            )?,
            command_timeout: positive_millis(
                "KURZ_REDIS_COMMAND_TIMEOUT_MS",
                vars.redis_command_timeout_ms.unwrap_or(50),
            )?,
        })
    }
}
