//! Visit limits: counting the redirects of a link with `max_visits`, exactly, in PostgreSQL.
//!
//! Only links with a limit come here (the redirect service checks
//! [`crate::Behaviour::is_limited`] on its cached copy first), so links without one pay
//! nothing. The count lives in `links.visits` and nowhere else: no cache holds it, so any
//! number of redirect instances, restarted or not, share one exact count.

use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::error::RepoError;
use crate::postgres::PgRepository;

/// What PostgreSQL says about one request to a limited link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Visits remain: redirect. From [`PgRepository::count_visit`], this request used one.
    Granted,
    /// Every visit is used up: the link answers as expired.
    UsedUp,
    /// The link has no limit (any more: an edit the caller's cached copy has not seen yet):
    /// redirect, nothing was counted.
    Unlimited,
    /// An admin disabled the link since the caller cached it.
    Disabled,
    /// No live link has this code (deleted since the caller cached it).
    Missing,
}

// One statement, so the check and the increment are atomic. Concurrent UPDATEs of one row
// queue on its row lock, and under READ COMMITTED each one re-evaluates `visits < max_visits`
// on the row as the one before left it, so of any number of concurrent requests, on any
// number of instances, exactly max_visits get `granted`.
//
// The outer SELECT reads the row as it was when the statement began (a data-modifying CTE's
// effect is invisible to the rest of its statement). That is all it needs: whether the link
// exists, is disabled or has no limit, so that a request that was not counted learns why.
// (A disable committed while this statement waited for the lock shows as `UsedUp` for that
// one request.)
const COUNT_VISIT: &str = "\
    WITH counted AS ( \
        UPDATE links SET visits = visits + 1 \
        WHERE code = $1 AND deleted_at IS NULL AND disabled_at IS NULL \
          AND visits < max_visits \
        RETURNING 1 \
    ) \
    SELECT EXISTS (SELECT 1 FROM counted) AS granted, \
           disabled_at IS NOT NULL AS disabled, \
           max_visits IS NULL AS unlimited \
    FROM links WHERE code = $1 AND deleted_at IS NULL";

// The same answer without counting: one index lookup, no write, no row lock.
const PEEK_VISITS: &str = "\
    SELECT coalesce(visits < max_visits, false) AS granted, \
           disabled_at IS NOT NULL AS disabled, \
           max_visits IS NULL AS unlimited \
    FROM links WHERE code = $1 AND deleted_at IS NULL";

impl PgRepository {
    /// Counts one visit of a limited link: [`Visit::Granted`] for exactly `max_visits` calls
    /// over the link's life, then [`Visit::UsedUp`].
    ///
    /// Not retried: if the UPDATE committed but its answer was lost (a connection reset after
    /// the commit), a retry would count the same request twice and spend a visit nobody got.
    /// The caller answers 503 instead, and the client's own retry is a new request.
    #[tracing::instrument(
        name = "postgres count_visit",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn count_visit(&self, code: &str) -> Result<Visit, RepoError> {
        self.guarded(self.ask_visits(COUNT_VISIT, code)).await
    }

    /// Whether a limited link has visits left, without using one: for requests that must not
    /// count (`HEAD`, bots and link previews) but still get the redirect or the expired answer.
    /// A read, so retried like every idempotent call.
    #[tracing::instrument(
        name = "postgres peek_visits",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn peek_visits(&self, code: &str) -> Result<Visit, RepoError> {
        self.idempotent(|| self.ask_visits(PEEK_VISITS, code)).await
    }

    /// Runs one of the two statements (unnamed, so a transaction-mode pooler takes it).
    async fn ask_visits(&self, sql: &str, code: &str) -> Result<Visit, RepoError> {
        let client = self.connection().await?;
        let row = client.query_typed_opt(sql, &[(&code, Type::TEXT)]).await?;
        Ok(visit_from_row(row.as_ref()))
    }
}

/// Both statements return the same three columns, or no row for a code without a live link.
fn visit_from_row(row: Option<&Row>) -> Visit {
    let Some(row) = row else {
        return Visit::Missing;
    };
    if row.get("disabled") {
        Visit::Disabled
    } else if row.get("unlimited") {
        Visit::Unlimited
    } else if row.get("granted") {
        Visit::Granted
    } else {
        Visit::UsedUp
    }
}
