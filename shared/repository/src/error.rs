//! Errors of the data layer. They say what failed, never how to answer a client: each service
//! maps them to HTTP in one place.

use deadpool_postgres::PoolError;
use kurz_telemetry::metrics::names;
use tokio_postgres::error::SqlState;

/// A PostgreSQL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// PostgreSQL could not be reached: connection refused or reset, server shutting down or
    /// starting, too many connections. Retried by idempotent calls; counts against the breaker.
    #[error("PostgreSQL is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// PostgreSQL did not answer in time: pool wait, connect or statement timeout. Counts
    /// against the breaker, but is not retried (the time budget is spent).
    #[error("PostgreSQL did not answer in time")]
    Timeout(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A statement that scans an account's links (a search, a count) ran out of its own
    /// timeout: the request asks too much, PostgreSQL is fine. Not counted against the breaker
    /// and not retried.
    #[error("the search read more links than its time allows")]
    ScanTimeout(#[source] tokio_postgres::Error),
    /// The circuit breaker refused the call without trying: PostgreSQL failed recently.
    #[error("PostgreSQL calls are suspended after repeated failures (circuit breaker open)")]
    CircuitOpen,
    /// The code or alias is already taken (issued, or used by a link).
    #[error("the code is already taken")]
    CodeTaken,
    /// An account with this name exists already.
    #[error("the name is already taken")]
    NameTaken,
    /// The database is at an older schema than this binary needs.
    #[error(
        "the database schema is at version {found} but this binary needs version {needed}; \
         run `kurz-keypool migrate` first"
    )]
    SchemaOutdated { found: i64, needed: i64 },
    /// Applying migrations failed.
    #[error("applying migrations failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other database error: a bug or a broken invariant, not an outage.
    #[error("database error")]
    Database(#[source] tokio_postgres::Error),
}

impl RepoError {
    /// Whether this failure is about availability (retry later) rather than about the request:
    /// services answer these 503 with `Retry-After`.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::Timeout(_) | Self::CircuitOpen
        )
    }

    /// Whether the circuit breaker counts this as a failure of PostgreSQL. Client outcomes
    /// (a taken code, a missing row) are answers, not failures.
    pub fn counts_against_breaker(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }

    /// Whether an idempotent call may be tried again at once: a broken or refused connection
    /// (a restart killed the pooled one), but not a timeout, whose budget is spent, and never a
    /// refusal by the breaker.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl RepoError {
    /// [`From`] for the statement of a scan: its statement timeout is the request's fault.
    pub(crate) fn from_scan(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            Self::ScanTimeout(e)
        } else {
            Self::from(e)
        }
    }
}

impl From<tokio_postgres::Error> for RepoError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            Self::CodeTaken
        } else if e.code() == Some(&SqlState::QUERY_CANCELED) {
            // statement_timeout. Counted here, where it is told apart from other errors.
            metrics::counter!(names::DB_TIMEOUTS, "kind" => "statement").increment(1);
            Self::Timeout(Box::new(e))
        } else if is_availability_failure(&e) {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Database(e)
        }
    }
}

impl From<PoolError> for RepoError {
    fn from(e: PoolError) -> Self {
        match e {
            // The backend error of a pool is a failed connect; everything else in a pool error
            // (timeouts, a closed pool, a failed post-create hook) is about availability too.
            PoolError::Backend(e) => Self::from(e),
            e @ PoolError::Timeout(_) => {
                metrics::counter!(names::DB_TIMEOUTS, "kind" => "pool").increment(1);
                Self::Timeout(Box::new(e))
            }
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// Connection-level failures and server states that say "not now" rather than "not this".
fn is_availability_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: the failure happened below SQL (I/O, connect, protocol), so it is the
        // connection, not the statement.
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources (too many connections)
                || code.starts_with("57P") // admin/crash shutdown, cannot connect now
                || code == SqlState::T_R_SERIALIZATION_FAILURE.code()
                || code == SqlState::T_R_DEADLOCK_DETECTED.code()
                || code == SqlState::READ_ONLY_SQL_TRANSACTION.code() // failover in progress
        }
    }
}

/// A Redis cache operation failed. Callers log it and carry on without the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("Redis is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("unreadable cache entry")]
    Corrupt,
}
