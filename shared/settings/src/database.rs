//! PostgreSQL connection settings.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::{SettingsError, Source, positive_millis};

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
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    database_url: Option<SecretString>,
    database_pool_size: Option<usize>,
    database_connect_timeout_ms: Option<u64>,
    database_pool_timeout_ms: Option<u64>,
    database_statement_timeout_ms: Option<u64>,
}

impl DatabaseSettings {
    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let url = vars
            .database_url
            .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL));
        let pool_size = vars.database_pool_size.unwrap_or(16);
        if pool_size == 0 {
            return Err(SettingsError::invalid(
                "KURZ_DATABASE_POOL_SIZE",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url,
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
