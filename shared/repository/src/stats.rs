//! The read side of click analytics: one link's or one owner's rollups over a range, summed
//! into the caller's buckets, with the largest values of each dimension. The analytics worker
//! writes these tables (migration V5 has the storage design); nothing here writes.
//!
//! Time zones and bucket arithmetic are the caller's: it passes the UTC instants where its
//! buckets start, and PostgreSQL sorts each hourly row into one (`width_bucket` on that
//! sorted array), so the rows never leave the database and the answer is at most one row per
//! bucket, whatever the range.
//!
//! Everything is one unnamed statement under the listing's 2 s scan bound
//! ([`PgRepository::scan`]): an account's range can read many rows, and running out of time is
//! [`RepoError::ScanTimeout`] (the request asks too much), never counted by the breaker.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

pub use crate::clicks::Dimension;
use crate::error::RepoError;
use crate::listing::{JsonText, ListOwner};
use crate::postgres::PgRepository;

/// How many values of each dimension, and how many links, a top list keeps.
pub const TOP: i64 = 10;

/// Whose clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsScope<'a> {
    /// One link, by code (deleted or not: the caller checks who may see it).
    Link(&'a str),
    /// Every link of an owner, through the `owner_id` indexes of the rollups.
    Owner(ListOwner),
}

/// Which clicks count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BotFilter {
    /// Humans only: what a link's `clicks` counts.
    #[default]
    Exclude,
    /// Humans and bots.
    Include,
    /// Bots only.
    Only,
}

impl BotFilter {
    pub fn counts_humans(self) -> bool {
        self != Self::Only
    }

    pub fn counts_bots(self) -> bool {
        self != Self::Exclude
    }
}

/// What to read: `[from, to)` counted into buckets starting at `bucket_starts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Ascending, the first at or before `from`. An hourly row goes to the last bucket that
    /// starts at or before its hour; the hour holding `from`, which may start before the
    /// first bucket (in zones whose offset is not whole hours), goes to the first.
    pub bucket_starts: Vec<DateTime<Utc>>,
    /// Decides the order and the cut of the top lists (the counts come back unfiltered).
    pub bots: BotFilter,
}

/// Clicks of a bucket or a range, unfiltered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub humans: i64,
    pub bots: i64,
    /// Visitors counted in the hour of their first click of a UTC day (see V5).
    pub unique_humans: i64,
    pub unique_bots: i64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.humans += other.humans;
        self.bots += other.bots;
        self.unique_humans += other.unique_humans;
        self.unique_bots += other.unique_bots;
    }
}

/// One value of a dimension, summed over the UTC days that overlap the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopValue {
    pub dimension: Dimension,
    pub value: String,
    pub humans: i64,
    pub bots: i64,
}

/// A link of an owner, with its clicks in the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLink {
    pub code: String,
    pub humans: i64,
    pub bots: i64,
}

/// What [`PgRepository::click_stats`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickStats {
    /// One per bucket start, zeros included.
    pub buckets: Vec<Counts>,
    /// Up to [`TOP`] values per dimension, largest first under the filter, ties by value
    /// (byte order); values with nothing under the filter are left out.
    pub top: Vec<TopValue>,
    /// Up to [`TOP`] live links, the same way, ties by code; empty for a link's stats.
    pub top_links: Vec<TopLink>,
}

/// One statement for all of it, so one 2 s bound covers the whole request (three statements
/// would get 2 s each). Parameters: `$1` the code (link scope), `$2` anonymous and `$3` the
/// account (owner scope); each scope's condition reads its own and ignores the others'.
/// `$4, $5`: the hours `[from's hour, to)`; `$6`: the bucket starts; `$7, $8`: the UTC days
/// `[first, end)`; `$9, $10`: whether humans and bots count; `$11`: whether to rank links.
///
/// `hourly` is read twice (series and top links), so PostgreSQL materializes it once. The
/// ranking expression is the filtered count; `value COLLATE "C"` makes ties byte order,
/// whatever the database's collation. Deleted links are in the sums (their clicks happened)
/// but not in the top links, whose codes could not be looked up any more.
macro_rules! stats_statement {
    ($scope:literal) => {
        concat!(
            "WITH hourly AS ( \
                SELECT link_id, hour, humans, bots, unique_humans, unique_bots \
                FROM click_hourly WHERE ",
            $scope,
            " AND hour >= $4 AND hour < $5 \
             ), series AS ( \
                SELECT greatest(width_bucket(hour, $6::timestamptz[]), 1) AS bucket, \
                       sum(humans)::int8 AS humans, sum(bots)::int8 AS bots, \
                       sum(unique_humans)::int8 AS unique_humans, \
                       sum(unique_bots)::int8 AS unique_bots \
                FROM hourly GROUP BY 1 \
             ), ranked AS ( \
                SELECT dimension, value, sum(humans)::int8 AS humans, sum(bots)::int8 AS bots, \
                       row_number() OVER ( \
                           PARTITION BY dimension \
                           ORDER BY sum(CASE WHEN $9 THEN humans ELSE 0 END \
                                      + CASE WHEN $10 THEN bots ELSE 0 END) DESC, \
                                    value COLLATE \"C\" \
                       ) AS rank \
                FROM click_daily WHERE ",
            $scope,
            " AND day >= $7 AND day < $8 \
                GROUP BY dimension, value \
                HAVING sum(CASE WHEN $9 THEN humans ELSE 0 END \
                         + CASE WHEN $10 THEN bots ELSE 0 END) > 0 \
             ), per_link AS ( \
                SELECT link_id, sum(humans)::int8 AS humans, sum(bots)::int8 AS bots \
                FROM hourly WHERE $11 GROUP BY link_id \
             ), top_links AS ( \
                SELECT l.code, p.humans, p.bots \
                FROM per_link p JOIN links l ON l.id = p.link_id AND l.deleted_at IS NULL \
                WHERE CASE WHEN $9 THEN p.humans ELSE 0 END \
                    + CASE WHEN $10 THEN p.bots ELSE 0 END > 0 \
                ORDER BY CASE WHEN $9 THEN p.humans ELSE 0 END \
                       + CASE WHEN $10 THEN p.bots ELSE 0 END DESC, l.code \
                LIMIT 10 \
             ) \
             SELECT 'bucket' AS kind, bucket, NULL::text AS dimension, NULL::text AS value, \
                    humans, bots, unique_humans, unique_bots FROM series \
             UNION ALL \
             SELECT 'top', NULL, dimension, value, humans, bots, 0, 0 \
                FROM ranked WHERE rank <= 10 \
             UNION ALL \
             SELECT 'link', NULL, NULL, code, humans, bots, 0, 0 FROM top_links"
        )
    };
}

const LINK_STATS: &str = stats_statement!("link_id = (SELECT id FROM links WHERE code = $1::text)");

// The owner switch folds to one side before planning (unnamed statements are planned with
// their values), leaving a range scan of `click_hourly_owner` / `click_daily_owner`.
const OWNER_STATS: &str =
    stats_statement!("(($2::bool AND owner_id IS NULL) OR (NOT $2 AND owner_id = $3::int8))");

fn statement_of(scope: StatsScope<'_>) -> &'static str {
    match scope {
        StatsScope::Link(_) => LINK_STATS,
        StatsScope::Owner(_) => OWNER_STATS,
    }
}

/// The statement's parameters, typed.
struct StatsParams {
    code: Option<String>,
    anonymous: bool,
    account: Option<i64>,
    first_hour: DateTime<Utc>,
    to: DateTime<Utc>,
    starts: Vec<DateTime<Utc>>,
    first_day: NaiveDate,
    end_day: NaiveDate,
    humans: bool,
    bots: bool,
    rank_links: bool,
}

impl StatsParams {
    fn of(scope: StatsScope<'_>, range: &StatsRange) -> Self {
        let (code, anonymous, account) = match scope {
            StatsScope::Link(code) => (Some(code.to_owned()), false, None),
            StatsScope::Owner(ListOwner::Anonymous) => (None, true, None),
            StatsScope::Owner(ListOwner::Account(id)) => (None, false, Some(id)),
        };
        let (first_day, end_day) = utc_days(range.from, range.to);
        Self {
            code,
            anonymous,
            account,
            first_hour: start_of_hour(range.from),
            to: range.to,
            starts: range.bucket_starts.clone(),
            first_day,
            end_day,
            humans: range.bots.counts_humans(),
            bots: range.bots.counts_bots(),
            rank_links: matches!(scope, StatsScope::Owner(_)),
        }
    }

    fn typed(&self) -> [(&(dyn ToSql + Sync), Type); 11] {
        [
            (&self.code, Type::TEXT),
            (&self.anonymous, Type::BOOL),
            (&self.account, Type::INT8),
            (&self.first_hour, Type::TIMESTAMPTZ),
            (&self.to, Type::TIMESTAMPTZ),
            (&self.starts, Type::TIMESTAMPTZ_ARRAY),
            (&self.first_day, Type::DATE),
            (&self.end_day, Type::DATE),
            (&self.humans, Type::BOOL),
            (&self.bots, Type::BOOL),
            (&self.rank_links, Type::BOOL),
        ]
    }
}

/// The UTC hour `at` falls in (the rollups' hours are UTC).
fn start_of_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp().div_euclid(3_600) * 3_600;
    DateTime::from_timestamp(secs, 0).unwrap_or(at)
}

/// The UTC days that overlap `[from, to)`, as `[first, end)`.
fn utc_days(from: DateTime<Utc>, to: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let first = from.date_naive();
    // The day of the last instant before `to`: a range ending at midnight ends the day before.
    let last = (to - TimeDelta::nanoseconds(1)).date_naive().max(first);
    (first, last.succ_opt().unwrap_or(last))
}

impl PgRepository {
    /// The clicks of `scope` in `range`: per bucket, the top values and (for an owner) the
    /// top links. [`RepoError::ScanTimeout`] when it reads for longer than the scan bound.
    #[tracing::instrument(
        name = "postgres click_stats",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", buckets = range.bucket_starts.len()),
        err(level = "warn")
    )]
    pub async fn click_stats(
        &self,
        scope: StatsScope<'_>,
        range: &StatsRange,
    ) -> Result<ClickStats, RepoError> {
        let params = StatsParams::of(scope, range);
        let rows = self.scan(statement_of(scope), &params.typed()).await?;
        Ok(stats_of(&rows, range.bucket_starts.len(), range.bots))
    }

    /// `EXPLAIN (FORMAT JSON)` of exactly the statement [`Self::click_stats`] runs with these
    /// arguments, as PostgreSQL plans it with their values: for the test that proves an
    /// owner's stats read the `owner_id` indexes, and for operators. It does not run it.
    pub async fn explain_click_stats(
        &self,
        scope: StatsScope<'_>,
        range: &StatsRange,
    ) -> Result<String, RepoError> {
        let params = StatsParams::of(scope, range);
        let sql = format!("EXPLAIN (FORMAT JSON) {}", statement_of(scope));
        self.idempotent(|| async {
            let client = self.connection().await?;
            let rows = client.query_typed(&sql, &params.typed()).await?;
            let plan: Vec<String> = rows.iter().map(|row| row.get::<_, JsonText>(0).0).collect();
            Ok(plan.concat())
        })
        .await
    }
}

/// The rows of the statement as [`ClickStats`], the lists in their final order.
fn stats_of(rows: &[Row], buckets: usize, bots: BotFilter) -> ClickStats {
    let mut stats = ClickStats {
        buckets: vec![Counts::default(); buckets],
        ..ClickStats::default()
    };
    for row in rows {
        let (humans, bots) = (row.get("humans"), row.get("bots"));
        match row.get::<_, &str>("kind") {
            "bucket" => {
                let bucket: i32 = row.get("bucket");
                // width_bucket counts from 1; past the last start is the last bucket.
                let index = usize::try_from(bucket - 1).unwrap_or(0);
                if let Some(counts) = stats.buckets.get_mut(index) {
                    *counts += Counts {
                        humans,
                        bots,
                        unique_humans: row.get("unique_humans"),
                        unique_bots: row.get("unique_bots"),
                    };
                }
            }
            "top" => {
                // A dimension the API does not show (the table admits `source`) is skipped.
                if let Some(dimension) = Dimension::parse(row.get("dimension")) {
                    stats.top.push(TopValue {
                        dimension,
                        value: row.get("value"),
                        humans,
                        bots,
                    });
                }
            }
            _ => stats.top_links.push(TopLink {
                code: row.get("value"),
                humans,
                bots,
            }),
        }
    }
    let filtered = |humans: i64, n_bots: i64| {
        i64::from(bots.counts_humans()) * humans + i64::from(bots.counts_bots()) * n_bots
    };
    stats.top.sort_by(|a, b| {
        (a.dimension, filtered(b.humans, b.bots), &a.value).cmp(&(
            b.dimension,
            filtered(a.humans, a.bots),
            &b.value,
        ))
    });
    stats.top_links.sort_by(|a, b| {
        (filtered(b.humans, b.bots), &a.code).cmp(&(filtered(a.humans, a.bots), &b.code))
    });
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("a date-time")
            .with_timezone(&Utc)
    }

    fn day(raw: &str) -> NaiveDate {
        raw.parse().expect("a date")
    }

    #[test]
    fn the_top_lists_read_every_utc_day_the_range_touches() {
        let cases = [
            (
                "2026-03-01T00:00:00Z",
                "2026-03-02T00:00:00Z",
                "2026-03-01",
                "2026-03-02",
            ),
            (
                "2026-03-01T23:59:00Z",
                "2026-03-02T00:00:01Z",
                "2026-03-01",
                "2026-03-03",
            ),
            (
                "2026-03-01T10:00:00Z",
                "2026-03-01T11:00:00Z",
                "2026-03-01",
                "2026-03-02",
            ),
            (
                "2026-02-27T12:00:00Z",
                "2026-03-01T00:00:00Z",
                "2026-02-27",
                "2026-03-01",
            ),
        ];
        for (from, to, first, end) in cases {
            assert_eq!(
                utc_days(at(from), at(to)),
                (day(first), day(end)),
                "{from} {to}"
            );
        }
    }

    #[test]
    fn the_first_hour_is_the_utc_hour_holding_from() {
        assert_eq!(
            start_of_hour(at("2026-03-01T10:45:12.5Z")),
            at("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            start_of_hour(at("1969-12-31T23:30:00Z")),
            at("1969-12-31T23:00:00Z")
        );
    }

    #[test]
    fn bot_filters_say_which_clicks_count() {
        assert!(BotFilter::Exclude.counts_humans() && !BotFilter::Exclude.counts_bots());
        assert!(BotFilter::Include.counts_humans() && BotFilter::Include.counts_bots());
        assert!(!BotFilter::Only.counts_humans() && BotFilter::Only.counts_bots());
    }
}
