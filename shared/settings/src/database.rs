//! PostgreSQL connection settings.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::{SettingsError, Source, in_range, positive_millis, positive_secs};

/// Default for the local stack (`infra/local/run`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://kurz@127.0.0.1:55432/kurz";

/// How a binary reaches PostgreSQL and how long it may wait on it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `KURZ_DATABASE_URL`, a `postgres://` URL (default: the local stack's).
    pub url: SecretString,
    /// `KURZ_DATABASE_POOL_SIZE`: connections per process (default 16).
    pub pool_size: usize,
    /// `KURZ_DATABASE_CONNECT_TIMEOUT_MS`: TCP connect and start-up (default 2,000 ms).
    pub connect_timeout: Duration,
    /// `KURZ_DATABASE_POOL_TIMEOUT_MS`: the longest a request waits for a free connection
    /// (default 2,000 ms).
    pub pool_timeout: Duration,
    /// `KURZ_DATABASE_STATEMENT_TIMEOUT_MS`: server-side `statement_timeout` (default 5,000 ms).
    pub statement_timeout: Duration,
    pub breaker: BreakerSettings,
}

/// The circuit breaker in front of PostgreSQL (see `kurz_repository::breaker`).
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// `KURZ_BREAKER_FAILURES`: availability failures in a row that open the breaker
    /// (default 5: one dead pooled connection after a restart must not trip it).
    pub failures: u32,
    /// `KURZ_BREAKER_BACKOFF_SECS`: first open period (default 1 s; whole seconds, as the
    /// `failsafe` backoff counts them).
    pub backoff_start: Duration,
    /// `KURZ_BREAKER_BACKOFF_MAX_SECS`: the open period doubles on each failed probe up to
    /// this (default 30 s).
    pub backoff_max: Duration,
    /// `KURZ_BREAKER_PROBES`: calls admitted at once while half-open (default 3).
    pub probes: usize,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    database_url: Option<SecretString>,
    database_pool_size: Option<usize>,
    database_connect_timeout_ms: Option<u64>,
    database_pool_timeout_ms: Option<u64>,
    database_statement_timeout_ms: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_backoff_secs: Option<u64>,
    breaker_backoff_max_secs: Option<u64>,
    breaker_probes: Option<usize>,
}

impl DatabaseSettings {
    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let url = vars
            .database_url
            .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL));
        let pool_size = in_range(
            "KURZ_DATABASE_POOL_SIZE",
            vars.database_pool_size.unwrap_or(16),
            1..=10_000,
        )?;
        let breaker = BreakerSettings {
            failures: in_range(
                "KURZ_BREAKER_FAILURES",
                vars.breaker_failures.unwrap_or(5),
                1..=1_000,
            )?,
            backoff_start: positive_secs(
                "KURZ_BREAKER_BACKOFF_SECS",
                vars.breaker_backoff_secs.unwrap_or(1),
            )?,
            backoff_max: positive_secs(
                "KURZ_BREAKER_BACKOFF_MAX_SECS",
                vars.breaker_backoff_max_secs.unwrap_or(30),
            )?,
            probes: in_range(
                "KURZ_BREAKER_PROBES",
                vars.breaker_probes.unwrap_or(3),
                1..=1_000,
            )?,
        };
        if breaker.backoff_max < breaker.backoff_start {
            return Err(SettingsError::invalid(
                "KURZ_BREAKER_BACKOFF_MAX_SECS",
                "must be at least KURZ_BREAKER_BACKOFF_SECS",
            ));
        }
        Ok(Self {
            url,
            breaker,
            pool_size,
            connect_timeout: positive_millis(
                "KURZ_DATABASE_CONNECT_TIMEOUT_MS",
                vars.database_connect_timeout_ms.unwrap_or(2_000),
            )?,
            pool_timeout: positive_millis(
                "KURZ_DATABASE_POOL_TIMEOUT_MS",
                vars.database_pool_timeout_ms.unwrap_or(2_000),
            )?,
            statement_timeout: positive_millis(
                "KURZ_DATABASE_STATEMENT_TIMEOUT_MS",
                vars.database_statement_timeout_ms.unwrap_or(5_000),
            )?,
        })
    }
}
