//! Click analytics: `GET /api/v1/links/{code}/stats` (one link) and `GET /api/v1/stats` (an
//! account), read from the rollups the analytics worker writes (`kurz_repository::stats`).
//!
//! The query string becomes a range, a time zone and the UTC instants where the series'
//! buckets start ([`buckets`]); PostgreSQL sums the hourly rows into those buckets, so the
//! answer's size is bounded by the bucket limit, never by the clicks.
//!
//! - Hourly rows are UTC hours, and each counts in the bucket holding the instant it starts.
//!   In a zone whose offset is not whole hours (Asia/Kolkata, +05:30) an hour that straddles
//!   a local bucket boundary counts wholly in the bucket where it starts; the hour holding
//!   `from` counts in the first bucket. So the series always adds up to the totals.
//! - The top lists sum the daily rollups, which are UTC days: every UTC day the range touches
//!   counts whole.

pub mod buckets;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use kurz_repository::listing::ListOwner;
use kurz_repository::stats::{
    BotFilter, ClickStats, Counts, Dimension, StatsRange, StatsScope, TopValue,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Authorized, StatsRead};
use crate::error::ApiError;
use crate::manage::{instant, owner_of};
use crate::openapi::errors;
use crate::routes::State;
use buckets::{BucketError, Granularity, bucket_starts};

/// The range when the query names no `from`: the week before `to`.
const DEFAULT_RANGE: TimeDelta = TimeDelta::days(7);

/// `bots` as the query string names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotsParam {
    /// Humans only (what a link's `clicks` counts).
    #[default]
    Exclude,
    /// Humans and bots.
    Include,
    /// Bots only.
    Only,
}

impl From<BotsParam> for BotFilter {
    fn from(bots: BotsParam) -> Self {
        match bots {
            BotsParam::Exclude => Self::Exclude,
            BotsParam::Include => Self::Include,
            BotsParam::Only => Self::Only,
        }
    }
}

/// A stats query string: the shared parameters and `extra` fields, so that the link's stats
/// refuse `account` as the unknown parameter it is there. Times are read as text and checked
/// by [`StatsParams::request`], so that each bad one is named.
macro_rules! stats_query {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// RFC 3339, included: where the range starts (default: `to` minus 7 days).
            #[param(format = DateTime)]
            pub from: Option<String>,
            /// RFC 3339, excluded: where the range ends (default: now). After `from`.
            #[param(format = DateTime)]
            pub to: Option<String>,
            /// `hour`, `day`, `week` (ISO, from Monday) or `month`. Default by the range's
            /// length: up to 3 days `hour`, up to 93 days `day`, up to 731 days `week`, else
            /// `month`. At most 1,000 buckets.
            #[param(inline)]
            pub granularity: Option<Granularity>,
            /// An IANA time zone name (default `UTC`): buckets follow its clocks, DST
            /// included, and each `start` carries its offset.
            #[param(example = "Europe/Berlin")]
            pub tz: Option<String>,
            /// Which clicks count: `exclude` bots (default), `include` them, or `only` bots.
            #[serde(default)]
            #[param(inline)]
            pub bots: BotsParam,
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl StatsParams for $name {
            fn times(&self) -> Times<'_> {
                Times {
                    from: self.from.as_deref(),
                    to: self.to.as_deref(),
                    granularity: self.granularity,
                    tz: self.tz.as_deref(),
                    bots: self.bots,
                }
            }
        }
    };
}

stats_query! {
    /// The query string of `GET /api/v1/links/{code}/stats`.
    LinkStatsQuery {}
}

stats_query! {
    /// The query string of `GET /api/v1/stats`.
    AccountStatsQuery {
        /// Admins only (others: 403): an account id, or `anonymous` for links created
        /// without one. Without it: the key's own account.
        account: Option<String>,
    }
}

/// The shared parameters of a stats query string, as sent.
#[derive(Debug)]
struct Times<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
    granularity: Option<Granularity>,
    tz: Option<&'a str>,
    bots: BotsParam,
}

trait StatsParams {
    fn times(&self) -> Times<'_>;

    /// The range and its buckets, with `now` as the default end.
    fn request(&self, now: DateTime<Utc>) -> Result<StatsRequest, ApiError> {
        let sent = self.times();
        let to = instant(sent.to, "to")?.unwrap_or(now);
        let from = match instant(sent.from, "from")? {
            Some(from) => from,
            None => to
                .checked_sub_signed(DEFAULT_RANGE)
                .ok_or_else(|| ApiError::InvalidRange("to is too early".to_owned()))?,
        };
        if from >= to {
            return Err(ApiError::InvalidRange("from must be before to".to_owned()));
        }
        let tz = match sent.tz {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| ApiError::InvalidTimezone)?,
        };
        let granularity = sent
            .granularity
            .unwrap_or_else(|| Granularity::for_range(to - from));
        let starts = bucket_starts(from, to, granularity, tz).map_err(|e| match e {
            BucketError::TooMany => ApiError::TooManyBuckets(granularity.as_str()),
            BucketError::OutOfRange => {
                ApiError::InvalidRange("the range reaches past the calendar's limits".to_owned())
            }
        })?;
        Ok(StatsRequest {
            range: StatsRange {
                from,
                to,
                bucket_starts: starts,
                bots: sent.bots.into(),
            },
            granularity,
            tz,
            bots: sent.bots,
        })
    }
}

impl Granularity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// A checked stats query.
#[derive(Debug)]
struct StatsRequest {
    range: StatsRange,
    granularity: Granularity,
    tz: Tz,
    bots: BotsParam,
}

impl StatsRequest {
    fn shown(&self, at: DateTime<Utc>) -> DateTime<FixedOffset> {
        at.with_timezone(&self.tz).fixed_offset()
    }

    /// The answer from what PostgreSQL found.
    fn report(&self, stats: &ClickStats) -> StatsReport {
        let filter = self.range.bots;
        let mut totals = Counts::default();
        let series = self
            .range
            .bucket_starts
            .iter()
            .zip(&stats.buckets)
            .map(|(start, counts)| {
                totals += *counts;
                SeriesPoint {
                    start: self.shown(*start),
                    counts: Clicks::of(*counts, filter),
                }
            })
            .collect();
        StatsReport {
            from: self.shown(self.range.from),
            to: self.shown(self.range.to),
            granularity: self.granularity,
            tz: self.tz.name().to_owned(),
            bots: self.bots,
            totals: Clicks::of(totals, filter),
            series,
            top: TopLists::of(&stats.top, filter),
        }
    }
}

/// RFC 3339 with the numeric offset even when it is zero (chrono's own writes `Z` then), so
/// every time of an answer reads alike; fractions of a second only when there are any.
fn with_offset<S: serde::Serializer>(
    at: &DateTime<FixedOffset>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

/// Clicks under the `bots` filter: `humans` and `bots` are the real split within it (with
/// `exclude`, `bots` is 0; with `only`, `humans` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Clicks {
    /// `humans` + `bots`.
    pub clicks: i64,
    pub humans: i64,
    pub bots: i64,
    /// Visitors, each counted once per UTC day it clicked (the visitor hash's key rotates
    /// daily, so nobody is followed across days); a range's are the sum of its days'.
    /// Visitors that send `DNT: 1` or `Sec-GPC: 1` are not counted here.
    pub unique_visitors: i64,
}

impl Clicks {
    fn of(counts: Counts, filter: BotFilter) -> Self {
        let humans = if filter.counts_humans() {
            counts.humans
        } else {
            0
        };
        let bots = if filter.counts_bots() { counts.bots } else { 0 };
        let unique_humans = if filter.counts_humans() {
            counts.unique_humans
        } else {
            0
        };
        let unique_bots = if filter.counts_bots() {
            counts.unique_bots
        } else {
            0
        };
        Self {
            clicks: humans + bots,
            humans,
            bots,
            unique_visitors: unique_humans + unique_bots,
        }
    }
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeriesPoint {
    /// The bucket's first instant, in `tz` with the offset in force then.
    #[schema(value_type = String, format = DateTime, example = "2026-11-30T00:00:00+01:00")]
    #[serde(serialize_with = "with_offset")]
    pub start: DateTime<FixedOffset>,
    #[serde(flatten)]
    pub counts: Clicks,
}

/// A value of a dimension and its clicks under the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopEntry {
    #[schema(example = "news.example")]
    pub value: String,
    pub clicks: i64,
}

/// The 10 values of each dimension with the most clicks under the filter, most first, ties
/// by value (byte order); values with none are left out. Summed over whole UTC days: every
/// UTC day the range touches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopLists {
    /// Referrer hosts.
    pub referrers: Vec<TopEntry>,
    /// ISO 3166-1 alpha-2 country codes, from the client IP.
    pub countries: Vec<TopEntry>,
    /// Browser families.
    pub browsers: Vec<TopEntry>,
    /// Operating system families.
    pub os: Vec<TopEntry>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub devices: Vec<TopEntry>,
    /// `link` (the short URL) or `qr` (a scan of its QR code).
    pub sources: Vec<TopEntry>,
}

impl TopLists {
    /// From values already in order.
    fn of(values: &[TopValue], filter: BotFilter) -> Self {
        let mut lists = Self::default();
        for value in values {
            let list = match value.dimension {
                Dimension::Referrer => &mut lists.referrers,
                Dimension::Country => &mut lists.countries,
                Dimension::Browser => &mut lists.browsers,
                Dimension::Os => &mut lists.os,
                Dimension::Device => &mut lists.devices,
                Dimension::Source => &mut lists.sources,
            };
            list.push(TopEntry {
                value: value.value.clone(),
                clicks: filtered(value.humans, value.bots, filter),
            });
        }
        lists
    }
}

fn filtered(humans: i64, bots: i64, filter: BotFilter) -> i64 {
    Clicks::of(
        Counts {
            humans,
            bots,
            ..Counts::default()
        },
        filter,
    )
    .clicks
}

/// What both stats answers share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsReport {
    /// The range's start, in `tz`.
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "with_offset")]
    pub from: DateTime<FixedOffset>,
    /// The range's end (excluded), in `tz`.
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "with_offset")]
    pub to: DateTime<FixedOffset>,
    pub granularity: Granularity,
    #[schema(example = "Europe/Berlin")]
    pub tz: String,
    pub bots: BotsParam,
    /// The hourly rollups of `[from's UTC hour, to)`: the sum of the series.
    pub totals: Clicks,
    /// One entry per bucket, from the one holding `from` to the one holding the last instant
    /// before `to`, zeros included.
    pub series: Vec<SeriesPoint>,
    pub top: TopLists,
}

/// `GET /api/v1/links/{code}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkStats {
    #[schema(example = "aB3xK9q")]
    pub code: String,
    #[serde(flatten)]
    pub report: StatsReport,
}

/// A link of the account and its clicks in the range, under the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopLink {
    #[schema(example = "aB3xK9q")]
    pub code: String,
    pub clicks: i64,
}

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountStats {
    /// The account; `null` for the links created without one (`account=anonymous`).
    pub account: Option<i64>,
    #[serde(flatten)]
    pub report: StatsReport,
    /// The 10 live links with the most clicks in the range under the filter, most first,
    /// ties by code; links with none are left out. Deleted links count in the totals but are
    /// not listed.
    pub top_links: Vec<TopLink>,
}

/// `GET /api/v1/links/{code}/stats`: one link's clicks over a range.
#[utoipa::path(
    tag = "stats",
    summary = "A link's clicks",
    description = "Totals, a series of buckets in the requested time zone, and the top \
        referrers, countries, browsers, operating systems and devices of one link, from the \
        hourly and daily rollups (a few seconds behind the redirects). Buckets follow the \
        zone's clocks, DST included; each hourly rollup (a UTC hour) counts in the bucket \
        holding the instant it starts, so in a zone such as Asia/Kolkata (+05:30) an hour \
        that straddles a boundary counts where it starts. The top lists sum whole UTC days. \
        Another account's link is 404, as an unknown code; an admin sees every link's.",
    security(("bearer" = ["stats:read"])),
    params(("code" = String, Path, description = "The link's code or alias."), LinkStatsQuery),
    responses(
        (status = 200, description = "The link's clicks.", body = LinkStats),
        (status = 400, response = inline(errors::BadStatsQuery)),
        (status = 404, response = inline(errors::NotFound)),
        (status = 422, response = inline(errors::SearchTooBroad)),
    ),
)]
#[get("/v1/links/{code}/stats")]
pub async fn link_stats(
    caller: Authorized<StatsRead>,
    code: web::Path<String>,
    query: web::Query<LinkStatsQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let request = query.request(Utc::now())?;
    if !kurz_repository::codes::is_well_formed(&code) {
        return Err(ApiError::NotFound);
    }
    let link = kurz_repository::LinkRepository::find(&state.repo, &code)
        .await?
        .filter(|link| caller.owner().covers(link.owner_id))
        .ok_or(ApiError::NotFound)?;
    let stats = state
        .repo
        .click_stats(StatsScope::Link(&link.code), &request.range)
        .await?;
    Ok(HttpResponse::Ok().json(LinkStats {
        report: request.report(&stats),
        code: link.code,
    }))
}

/// `GET /api/v1/stats`: an account's clicks over a range.
#[utoipa::path(
    tag = "stats",
    summary = "An account's clicks",
    description = "As a link's stats, for every link of the key's account (an admin's own, \
        or the one `account` names), plus the 10 links with the most clicks. Reads every \
        rollup row of the account in the range: a range that runs past 2 s is 422 \
        `search_too_broad`.",
    security(("bearer" = ["stats:read"])),
    params(AccountStatsQuery),
    responses(
        (status = 200, description = "The account's clicks.", body = AccountStats),
        (status = 400, response = inline(errors::BadStatsQuery)),
        (status = 422, response = inline(errors::SearchTooBroad)),
    ),
)]
#[get("/v1/stats")]
pub async fn account_stats(
    caller: Authorized<StatsRead>,
    query: web::Query<AccountStatsQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner_of(query.account.as_deref(), &caller)?;
    let request = query.request(Utc::now())?;
    let stats = state
        .repo
        .click_stats(StatsScope::Owner(owner), &request.range)
        .await?;
    let filter = request.range.bots;
    Ok(HttpResponse::Ok().json(AccountStats {
        account: match owner {
            ListOwner::Account(id) => Some(id),
            ListOwner::Anonymous => None,
        },
        report: request.report(&stats),
        top_links: stats
            .top_links
            .iter()
            .map(|top| TopLink {
                code: top.code.clone(),
                clicks: filtered(top.humans, top.bots, filter),
            })
            .collect(),
    }))
}
