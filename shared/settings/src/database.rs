//! PostgreSQL connection settings.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::{SettingsError, Source, in_range, positive_millis, positive_secs};

/// Default for the local stack (`infra/local/run`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://kurz@127.0.0.1:55432/kurz";

/// What sits between Kurz's pools and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// Nothing, or a pooler in session mode: a pooled connection is one server session.
    None,
    /// A pooler in transaction mode, such as PgBouncer's `pool_mode = transaction`: each
    /// transaction may run on another server connection. Kurz sends no startup options then
    /// (PgBouncer refuses them), so the server-side statement timeout must come from the
    /// role or database (`ALTER ROLE kurz SET statement_timeout = '5s'`); Kurz's own deadline
    /// per call still holds.
    Transaction,
}

/// How a binary reaches PostgreSQL and how long it may wait on it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `KURZ_DATABASE_URL`, a `postgres://` URL (default: the local stack's). It may point at
    /// a pooler; see `pooler`.
    pub url: SecretString,
    /// `KURZ_DATABASE_DIRECT_URL`: PostgreSQL itself, never a transaction pooler (unset: `url`
    /// is direct). Used for what needs a session of its own: migrations (their advisory lock)
    /// and the key-pool worker's VACUUM (its longer statement timeout). See
    /// [`Self::direct_url`].
    direct_url: Option<SecretString>,
    /// `KURZ_DATABASE_POOLER`: `none` (default) or `transaction`.
    pub pooler: Pooler,
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
    database_direct_url: Option<SecretString>,
    database_pooler: Option<String>,
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
        let pooler = match vars.database_pooler.as_deref().map(str::to_ascii_lowercase) {
            None => Pooler::None,
            Some(p) if p == "none" => Pooler::None,
            Some(p) if p == "transaction" => Pooler::Transaction,
            Some(other) => {
                return Err(SettingsError::invalid(
                    "KURZ_DATABASE_POOLER",
                    format!("`{other}` is neither `none` nor `transaction`"),
                ));
            }
        };
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
            direct_url: vars.database_direct_url,
            pooler,
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

    /// The URL of PostgreSQL itself, for a session of its own. Behind a transaction pooler
    /// that must be `KURZ_DATABASE_DIRECT_URL`: a migration's advisory lock, or a session's
    /// `SET`, would otherwise land on a server connection other clients share.
    pub fn direct_url(&self) -> Result<&SecretString, SettingsError> {
        match (&self.direct_url, self.pooler) {
            (Some(url), _) => Ok(url),
            (None, Pooler::None) => Ok(&self.url),
            (None, Pooler::Transaction) => Err(SettingsError::invalid(
                "KURZ_DATABASE_DIRECT_URL",
                "is required with KURZ_DATABASE_POOLER=transaction: migrations and VACUUM \
                 need a session of their own, on PostgreSQL itself",
            )),
        }
    }
}

impl DatabaseSettings {
    /// The variables [`Self::from_source`] reads (`KURZ_DATABASE_*`, `KURZ_BREAKER_*`).
    pub fn variables() -> std::collections::BTreeSet<String> {
        crate::variables::names_of::<Vars>()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_pooler_defaults_to_none_and_the_direct_url_to_the_url() {
        let settings = DatabaseSettings::from_source(&Source::default()).expect("valid");
        assert_eq!(settings.pooler, Pooler::None);
        assert_eq!(
            settings.direct_url().expect("a direct URL").expose_secret(),
            DEFAULT_DATABASE_URL
        );
    }

    #[test]
    fn an_unknown_pooler_is_refused() {
        let source = Source::from_vars([("KURZ_DATABASE_POOLER", "session")]);
        let err = DatabaseSettings::from_source(&source).expect_err("must fail");
        assert!(err.to_string().contains("KURZ_DATABASE_POOLER"), "{err}");
    }

    #[test]
    fn behind_a_transaction_pooler_the_direct_url_must_be_given() {
        let source = Source::from_vars([("KURZ_DATABASE_POOLER", "Transaction")]);
        let settings = DatabaseSettings::from_source(&source).expect("valid");
        assert_eq!(settings.pooler, Pooler::Transaction);
        let err = settings.direct_url().expect_err("no direct URL");
        assert!(
            err.to_string().contains("KURZ_DATABASE_DIRECT_URL"),
            "{err}"
        );

        let direct = "postgres://kurz@127.0.0.1:5432/kurz";
        let source = Source::from_vars([
            ("KURZ_DATABASE_POOLER", "transaction"),
            ("KURZ_DATABASE_DIRECT_URL", direct),
        ]);
        let settings = DatabaseSettings::from_source(&source).expect("valid");
        assert_eq!(
            settings.direct_url().expect("given").expose_secret(),
            direct
        );
    }
}
