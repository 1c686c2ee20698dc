//! Managing links once they exist: one owner's links newest first with keyset pagination,
//! their count under the same filters, and the partial update behind an edit.
//!
//! Every statement here is unnamed (`query_typed*`), so it works through PgBouncer in
//! transaction mode. That also means PostgreSQL plans each execution with its parameter
//! values: a switch such as `$5 IS NULL OR target_url ILIKE $5` folds to one side before
//! planning, and the list statement becomes a plain range scan of `links_owner_created`
//! (`owner_id = $2 AND (created_at, id) < ($8, $9)`, in index order: no Sort node). The
//! listing test checks that plan with `EXPLAIN` on a million links.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::error::RepoError;
use crate::links::{link_columns, link_from_row};
use crate::model::{Link, Owner};
use crate::postgres::PgRepository;

/// The bound of a statement that may scan an account's links. Under the request-path
/// statement timeout (5 s by default), so a search fails as itself before the request's
/// deadline; at about 1.2 s per million links scanned here (BENCHMARKS.md), it covers
/// searches of accounts up to about 1.5 million links.
const SCAN_TIMEOUT: &str = "SET LOCAL statement_timeout = '2s'";

/// Whose links a listing shows: always one owner's, so that every listing reads one slice of
/// the index. (An admin lists another account by naming it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOwner {
    Account(i64),
    /// Links created without an account (anonymous creates).
    Anonymous,
}

/// Which links a listing keeps, by where they stand at [`LinkFilter::now`]. Deleted links
/// are never listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    All,
    /// Neither disabled nor expired.
    Active,
    /// Not disabled, and past its `expires_at` or out of visits (`visits >= max_visits`).
    Expired,
    /// Disabled by an admin, expired or not.
    Disabled,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Disabled => "disabled",
        }
    }
}

/// What a listing or a count keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFilter {
    pub owner: ListOwner,
    pub status: StatusFilter,
    /// A substring of the target URL or of the code, case-insensitive, taken literally
    /// (`%` and `_` are not wildcards).
    pub search: Option<String>,
    /// Links created strictly after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Links created strictly before this.
    pub created_before: Option<DateTime<Utc>>,
    /// The time `status` is judged at: the caller's clock, the one its views use.
    pub now: DateTime<Utc>,
}

/// A position in the newest-first order: the last link of a page. The next page starts
/// strictly after it, so concurrent inserts never shift what a cursor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub created_at: DateTime<Utc>,
    /// `links.id`: breaks ties between links of one group commit, which share `created_at`.
    pub id: i64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPage {
    pub links: Vec<Link>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Keyset>,
}

/// What an edit changes. For a nullable column, `None` keeps it, `Some(None)` clears it and
/// `Some(Some(v))` sets it; `target_url` and `forward_query` cannot be cleared. `visits` is
/// never touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkEdit {
    pub target_url: Option<String>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub redirect_status: Option<Option<u16>>,
    pub forward_query: Option<bool>,
    pub expired_url: Option<Option<String>>,
    pub max_visits: Option<Option<i64>>,
}

/// The conditions every listing and count share, on parameters `$1` to `$7` (see
/// [`FilterParams`]). The status cases mirror `Link::is_expired`; a NULL `expires_at` or
/// `max_visits` makes its comparison NULL, which is "not expired by that".
macro_rules! filter_conditions {
    () => {
        "deleted_at IS NULL \
         AND (($1 AND owner_id IS NULL) OR (NOT $1 AND owner_id = $2)) \
         AND CASE $3 \
             WHEN 'active' THEN disabled_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $4) \
                 AND (max_visits IS NULL OR visits < max_visits) \
             WHEN 'expired' THEN disabled_at IS NULL \
                 AND (expires_at <= $4 OR visits >= max_visits) \
             WHEN 'disabled' THEN disabled_at IS NOT NULL \
             ELSE true \
         END \
         AND ($5 IS NULL OR target_url ILIKE $5 ESCAPE '\\' OR code ILIKE $5 ESCAPE '\\') \
         AND ($6 IS NULL OR created_at > $6) \
         AND ($7 IS NULL OR created_at < $7)"
    };
}

/// `$8, $9`: the cursor (both NULL on the first page); `$10`: the rows to fetch. The row
/// comparison is what lets the index seek straight to the cursor (three `OR`ed column
/// comparisons would not); ORDER BY follows the index, so rows come out sorted.
const LIST: &str = concat!(
    "SELECT id, ",
    link_columns!(),
    " FROM links WHERE ",
    filter_conditions!(),
    " AND ($8 IS NULL OR (created_at, id) < ($8, $9)) \
     ORDER BY created_at DESC, id DESC LIMIT $10"
);

const LIST_TYPES: [Type; 10] = [
    Type::BOOL,
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT8,
];

// Counting has no shortcut: every matching index entry is read (an index-only scan where the
// visibility map allows). Bounded by the statement timeout like everything else.
const COUNT: &str = concat!("SELECT count(*) FROM links WHERE ", filter_conditions!());

// One statement sets only the given columns: each nullable one has a "given" flag, since NULL
// is a value to set; the others cannot be cleared, so NULL means "keep". `updated_at` moves
// only when a given value differs from the stored one, so an empty or repeated edit leaves it
// (all SET expressions read the row as it was). `$2` NULL is any owner (an admin); an
// anonymous link never equals an account, as in SOFT_DELETE.
const UPDATE: &str = concat!(
    "UPDATE links SET \
         target_url = coalesce($3, target_url), \
         expires_at = CASE WHEN $4 THEN $5 ELSE expires_at END, \
         redirect_status = CASE WHEN $6 THEN $7 ELSE redirect_status END, \
         forward_query = coalesce($8, forward_query), \
         expired_url = CASE WHEN $9 THEN $10 ELSE expired_url END, \
         max_visits = CASE WHEN $11 THEN $12 ELSE max_visits END, \
         updated_at = CASE WHEN ($3 IS NOT NULL AND $3 IS DISTINCT FROM target_url) \
             OR ($4 AND $5 IS DISTINCT FROM expires_at) \
             OR ($6 AND $7 IS DISTINCT FROM redirect_status) \
             OR ($8 IS NOT NULL AND $8 IS DISTINCT FROM forward_query) \
             OR ($9 AND $10 IS DISTINCT FROM expired_url) \
             OR ($11 AND $12 IS DISTINCT FROM max_visits) \
             THEN now() ELSE updated_at END \
     WHERE code = $1 AND deleted_at IS NULL AND ($2 IS NULL OR owner_id = $2) \
     RETURNING ",
    link_columns!()
);

/// A filter's values as `$1` to `$7`.
struct FilterParams {
    anonymous: bool,
    account: Option<i64>,
    status: &'static str,
    now: DateTime<Utc>,
    pattern: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
}

impl FilterParams {
    fn of(filter: &LinkFilter) -> Self {
        let (anonymous, account) = match filter.owner {
            ListOwner::Account(id) => (false, Some(id)),
            ListOwner::Anonymous => (true, None),
        };
        Self {
            anonymous,
            account,
            status: filter.status.as_str(),
            now: filter.now,
            pattern: filter.search.as_deref().map(contains_pattern),
            created_after: filter.created_after,
            created_before: filter.created_before,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.anonymous,
            &self.account,
            &self.status,
            &self.now,
            &self.pattern,
            &self.created_after,
            &self.created_before,
        ]
    }
}

/// An ILIKE pattern matching `needle` anywhere, with `\`, `%` and `_` taken literally.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The list statement's parameters: the filter's, the cursor, and `limit + 1` rows (the extra
/// one only tells whether a next page exists).
struct ListParams {
    filter: FilterParams,
    after_at: Option<DateTime<Utc>>,
    after_id: Option<i64>,
    rows: i64,
}

impl ListParams {
    fn of(filter: &LinkFilter, after: Option<Keyset>, limit: u32) -> Self {
        Self {
            filter: FilterParams::of(filter),
            after_at: after.map(|k| k.created_at),
            after_id: after.map(|k| k.id),
            rows: i64::from(limit) + 1,
        }
    }

    fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        let mut params = self.filter.params().to_vec();
        params.extend([
            &self.after_at as &(dyn ToSql + Sync),
            &self.after_id,
            &self.rows,
        ]);
        params.into_iter().zip(LIST_TYPES).collect()
    }
}

/// The text of a `json` value, as PostgreSQL sends it (the binary form of `json` is its text).
pub(crate) struct JsonText(pub(crate) String);

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }
}

/// `(given, value)` of a nullable column's edit.
fn given<T>(change: &Option<Option<T>>) -> (bool, Option<&T>) {
    (change.is_some(), change.as_ref().and_then(Option::as_ref))
}

impl PgRepository {
    /// One page of `filter`'s links, newest first (`created_at`, then `id`, descending),
    /// starting after `after` (`None`: the first page). At most `limit` links.
    #[tracing::instrument(
        name = "postgres list_links",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", limit),
        err(level = "warn")
    )]
    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        after: Option<Keyset>,
        limit: u32,
    ) -> Result<LinkPage, RepoError> {
        let params = ListParams::of(filter, after, limit);
        let typed = params.typed();
        let rows = if filter.search.is_some() {
            self.scan(LIST, &typed).await?
        } else {
            self.idempotent(|| async {
                let client = self.connection().await?;
                Ok(client.query_typed(LIST, &typed).await?)
            })
            .await?
        };
        Ok(page_of(&rows, limit as usize))
    }

    /// How many links `filter` keeps.
    #[tracing::instrument(
        name = "postgres count_links",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn count_links(&self, filter: &LinkFilter) -> Result<i64, RepoError> {
        let filter = FilterParams::of(filter);
        let typed: Vec<_> = filter.params().into_iter().zip(LIST_TYPES).collect();
        let rows = self.scan(COUNT, &typed).await?;
        Ok(rows.first().map_or(0, |row| row.get(0)))
    }

    /// Runs a statement that may read a whole account's links (a `q=` search, a count) under
    /// [`SCAN_TIMEOUT`] instead of the request-path statement timeout. Running out of it is
    /// the request's answer ([`RepoError::ScanTimeout`]), not a failure of PostgreSQL: the
    /// breaker does not count it, so one account's broad searches can never open the breaker
    /// for every other request of the instance. A transaction, because `SET LOCAL` is the
    /// only per-statement timeout that also works through a transaction-mode pooler.
    pub(crate) async fn scan(
        &self,
        statement: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, RepoError> {
        self.idempotent(|| async {
            let mut client = self.connection().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(SCAN_TIMEOUT).await?;
            let rows = tx
                .query_typed(statement, params)
                .await
                .map_err(RepoError::from_scan)?;
            tx.commit().await?;
            Ok(rows)
        })
        .await
    }

    /// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of exactly the statement
    /// [`Self::list_links`] runs with these arguments: for the test that proves the plan, and
    /// for operators. It runs the statement.
    pub async fn explain_list_links(
        &self,
        filter: &LinkFilter,
        after: Option<Keyset>,
        limit: u32,
    ) -> Result<String, RepoError> {
        let params = ListParams::of(filter, after, limit);
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {LIST}");
        self.idempotent(|| async {
            let client = self.connection().await?;
            let row = client.query_typed(&sql, &params.typed()).await?;
            Ok(row[0].get::<_, JsonText>(0).0)
        })
        .await
    }

    /// Applies `edit` to the live link `code` within `owner`'s reach and returns it as stored;
    /// `None` if there is no such link. Not retried: a write.
    #[tracing::instrument(
        name = "postgres update_link",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn update_link(
        &self,
        code: &str,
        owner: Owner,
        edit: &LinkEdit,
    ) -> Result<Option<Link>, RepoError> {
        let owner = owner.account();
        let (expires, expires_at) = given(&edit.expires_at);
        let (status_given, status) = given(&edit.redirect_status);
        let status = status.and_then(|s| i16::try_from(*s).ok());
        let (expired_given, expired_url) = given(&edit.expired_url);
        let (max_given, max_visits) = given(&edit.max_visits);
        let params: [(&(dyn ToSql + Sync), Type); 12] = [
            (&code, Type::TEXT),
            (&owner, Type::INT8),
            (&edit.target_url, Type::TEXT),
            (&expires, Type::BOOL),
            (&expires_at, Type::TIMESTAMPTZ),
            (&status_given, Type::BOOL),
            (&status, Type::INT2),
            (&edit.forward_query, Type::BOOL),
            (&expired_given, Type::BOOL),
            (&expired_url, Type::TEXT),
            (&max_given, Type::BOOL),
            (&max_visits, Type::INT8),
        ];
        self.guarded(async {
            let client = self.connection().await?;
            let row = client.query_typed_opt(UPDATE, &params).await?;
            Ok(row.as_ref().map(link_from_row))
        })
        .await
    }
}

/// The first `limit` rows as links, and the cursor of the last one if a row is left over.
fn page_of(rows: &[Row], limit: usize) -> LinkPage {
    let more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let next = rows.last().filter(|_| more).map(|row| Keyset {
        created_at: row.get("created_at"),
        id: row.get("id"),
    });
    LinkPage {
        links: rows.iter().map(link_from_row).collect(),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_pattern_takes_like_metacharacters_literally() {
        assert_eq!(contains_pattern("abc"), "%abc%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(contains_pattern("straße"), "%straße%");
    }
}
