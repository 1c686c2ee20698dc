//! The write side of click analytics: what `kurz-analytics` stores from the click streams,
//! and how it makes each stream entry count exactly once (the tables are described in
//! `migrations/V5__click_analytics.sql`; the stats API reads them elsewhere).
//!
//! A batch of events becomes a [`Rollup`]: counts per link and UTC hour, per link, UTC day,
//! dimension and value, the visitor hashes of the batch, and the stream entry ids it covers.
//! [`PgRepository::apply_rollup`] writes all of it in one transaction, so the counts and the
//! record of which entries produced them commit together or not at all.
//!
//! # Why an advisory lock per shard
//! An entry comes back to a worker when the one that read it was slow to acknowledge it, for
//! example because PostgreSQL was down and it kept retrying its batch: after
//! `KURZ_ANALYTICS_CLAIM_IDLE_MS` another worker claims it, finds no applied range for it and
//! applies it. If the first worker then committed too, the entry would count twice: neither
//! transaction sees the other's uncommitted range. So a transaction takes, per shard it
//! touches, a transaction-level advisory lock before it checks that none of its ranges
//! overlaps an applied one: shared for ranges read fresh (`XREADGROUP ... >` never hands an
//! entry to two consumers, so those never overlap one another and need not wait for each
//! other), exclusive for claimed entries. A transaction that finds an overlap writes nothing
//! and reports [`Applied::Overlap`]; the worker then looks its entries up one by one. The
//! lock is transaction-scoped, so it works through PgBouncer in transaction mode.
//!
//! Every statement is unnamed (`query_typed`, `execute_typed`), rows go in sorted by their
//! key (`BTreeMap`s), so two workers lock the same rows in the same order, and a deadlock or
//! serialization failure (rare, then) is retried like a broken connection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tokio_postgres::types::{ToSql, Type};

pub use crate::clicks::Dimension;
use crate::error::RepoError;
use crate::postgres::PgRepository;

/// The first key of the advisory locks on click shards (`pg_advisory_xact_lock(int4, int4)`,
/// the shard being the second): "kzcl". The two-key form never meets the one-key locks
/// (the migration lock).
const SHARD_LOCK_CLASS: i32 = 0x6b7a_636c;

/// A Redis stream entry id, `ms-seq`. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: i64,
    pub seq: i64,
}

impl EntryId {
    pub const ZERO: Self = Self { ms: 0, seq: 0 };
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An id that is not `ms-seq` with both parts in `0..=i64::MAX` (PostgreSQL's `bigint`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream entry id")]
pub struct BadEntryId(pub String);

impl FromStr for EntryId {
    type Err = BadEntryId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryId(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let part = |p: &str| p.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
        Ok(Self {
            ms: part(ms)?,
            seq: part(seq)?,
        })
    }
}

/// Entries `first..=last` of one shard's stream, applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppliedRange {
    pub shard: u16,
    pub first: EntryId,
    pub last: EntryId,
}

/// What a click is counted against: its link, found by code. A code never changes link and a
/// link never changes owner, so callers may cache this forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRef {
    pub id: i64,
    pub code: String,
    pub owner_id: Option<i64>,
}

/// Longest dimension value stored, in bytes (`click_daily_value_length`).
pub const MAX_VALUE_BYTES: usize = 255;

/// One classified click, as [`Rollup::add`] counts it.
#[derive(Debug, Clone, Copy)]
pub struct Click<'a> {
    pub link: &'a LinkRef,
    pub at: DateTime<Utc>,
    pub bot: bool,
    pub visitor: Option<[u8; 16]>,
    /// One value per dimension, each 1 to [`MAX_VALUE_BYTES`] bytes (longer ones are cut,
    /// empty ones stored as `(unknown)`).
    pub values: [(Dimension, &'a str); Dimension::ALL.len()],
}

/// Humans and bots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub humans: i64,
    pub bots: i64,
}

impl Counts {
    fn add(&mut self, bot: bool, n: i64) {
        if bot {
            self.bots += n;
        } else {
            self.humans += n;
        }
    }
}

/// A visitor's earliest click of a day in this batch: its first visit counts in that hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FirstClick {
    at: DateTime<Utc>,
    bot: bool,
}

/// The counts of a batch of clicks and the stream entries they came from, ready for
/// [`PgRepository::apply_rollup`].
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    ranges: Vec<AppliedRange>,
    /// Shards with claimed entries: their lock is taken exclusively.
    claimed_shards: BTreeSet<u16>,
    owners: BTreeMap<i64, Option<i64>>,
    hourly: BTreeMap<(i64, DateTime<Utc>), Counts>,
    daily: BTreeMap<(i64, NaiveDate, Dimension, String), Counts>,
    visitors: BTreeMap<(i64, NaiveDate, [u8; 16]), FirstClick>,
    /// Visitor hashes of earlier days are ignored: their rows are gone (see
    /// [`PgRepository::delete_visitors_before`]), so they would all look new.
    visitor_days_from: NaiveDate,
    clicks: usize,
}

impl Rollup {
    /// An empty rollup that counts unique visitors for clicks on `visitor_days_from` or later
    /// (yesterday, UTC: the days whose visitor hashes are kept).
    pub fn new(visitor_days_from: NaiveDate) -> Self {
        Self {
            visitor_days_from,
            ..Self::default()
        }
    }

    /// Records a contiguous run of one shard's stream, read fresh (`XREADGROUP ... >`).
    pub fn record_run(&mut self, shard: u16, first: EntryId, last: EntryId) {
        self.ranges.push(AppliedRange { shard, first, last });
    }

    /// Records one entry that came back (claimed, or pending from before a restart): a range
    /// of its own, since the claimed entries of a shard need not be contiguous, and a range
    /// over them could cover another consumer's entries.
    pub fn record_entry(&mut self, shard: u16, id: EntryId) {
        self.ranges.push(AppliedRange {
            shard,
            first: id,
            last: id,
        });
        self.claimed_shards.insert(shard);
    }

    /// Counts one click.
    pub fn add(&mut self, click: &Click<'_>) {
        let link = click.link.id;
        self.clicks += 1;
        self.owners.insert(link, click.link.owner_id);
        self.hourly
            .entry((link, hour_of(click.at)))
            .or_default()
            .add(click.bot, 1);
        let day = click.at.date_naive();
        for (dimension, value) in click.values {
            let value = match crate::clicks::truncate(value, MAX_VALUE_BYTES) {
                "" => "(unknown)",
                cut => cut,
            };
            self.daily
                .entry((link, day, dimension, value.to_owned()))
                .or_default()
                .add(click.bot, 1);
        }
        if let Some(visitor) = click.visitor.filter(|_| day >= self.visitor_days_from) {
            let first = FirstClick {
                at: click.at,
                bot: click.bot,
            };
            self.visitors
                .entry((link, day, visitor))
                .and_modify(|seen| {
                    if first.at < seen.at {
                        *seen = first;
                    }
                })
                .or_insert(first);
        }
    }

    /// Clicks counted.
    pub fn clicks(&self) -> usize {
        self.clicks
    }

    /// Whether there is nothing to write: no clicks (a batch of invalid entries or unknown
    /// links needs no transaction; acknowledging it is enough).
    pub fn is_empty(&self) -> bool {
        self.clicks == 0
    }

    /// The ranges recorded, in the order they were.
    pub fn ranges(&self) -> &[AppliedRange] {
        &self.ranges
    }

    /// Human clicks per link.
    fn human_clicks(&self) -> BTreeMap<i64, i64> {
        let mut per_link = BTreeMap::new();
        for (&(link, _), counts) in &self.hourly {
            if counts.humans > 0 {
                *per_link.entry(link).or_insert(0) += counts.humans;
            }
        }
        per_link
    }
}

/// The UTC hour `at` falls in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(at)
}

/// The oldest UTC day whose visitor hashes are kept at `now`: yesterday (a click just after
/// midnight may still be one of yesterday's, late).
pub fn oldest_visitor_day(now: DateTime<Utc>) -> NaiveDate {
    (now - TimeDelta::days(1)).date_naive()
}

/// What [`PgRepository::apply_rollup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Everything committed.
    Committed,
    /// A range overlaps entries already applied (another worker got there first): nothing was
    /// written. Look the entries up one by one ([`PgRepository::applied_entries`]).
    Overlap,
}

// The ids of a batch's links; deleted links too: the click happened while the link lived
// (or was served from a cache just after), and its rollups stay with it.
const LINKS_BY_CODE: &str = "SELECT id, code, owner_id FROM links WHERE code = ANY($1)";

// Whether each entry lies in an applied range. Ranges of a shard never overlap, so the only
// one that can hold an entry is the first that ends at or after it: one probe of the primary
// key (shard, last_ms, last_seq) per entry.
const APPLIED_ENTRIES: &str = "\
    SELECT e.n, coalesce((a.first_ms, a.first_seq) <= (e.ms, e.seq), false) AS applied \
    FROM unnest($1::int2[], $2::int8[], $3::int8[]) WITH ORDINALITY AS e(shard, ms, seq, n) \
    LEFT JOIN LATERAL ( \
        SELECT first_ms, first_seq FROM click_applied \
        WHERE shard = e.shard AND (last_ms, last_seq) >= (e.ms, e.seq) \
        ORDER BY last_ms, last_seq LIMIT 1 \
    ) a ON true \
    ORDER BY e.n";

// Per shard, in shard order (the arrays come sorted, and unnest keeps their order), so two
// transactions never wait for each other's locks crosswise.
const LOCK_SHARDS: &str = "\
    SELECT count(CASE WHEN s.exclusive THEN pg_advisory_xact_lock($3, s.shard) \
                      ELSE pg_advisory_xact_lock_shared($3, s.shard) END) \
    FROM unnest($1::int4[], $2::bool[]) AS s(shard, exclusive)";

// Inserts the ranges unless one of them overlaps an applied range (the same probe as
// APPLIED_ENTRIES, from the range's first entry), and says how many overlapped. Run under the
// shard locks, so no transaction that could overlap is between its check and its commit.
const INSERT_RANGES: &str = "\
    WITH input AS ( \
        SELECT * FROM unnest($1::int2[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
        AS r(shard, first_ms, first_seq, last_ms, last_seq) \
    ), overlapping AS ( \
        SELECT 1 FROM input r CROSS JOIN LATERAL ( \
            SELECT first_ms, first_seq FROM click_applied \
            WHERE shard = r.shard AND (last_ms, last_seq) >= (r.first_ms, r.first_seq) \
            ORDER BY last_ms, last_seq LIMIT 1 \
        ) a \
        WHERE (a.first_ms, a.first_seq) <= (r.last_ms, r.last_seq) \
    ), inserted AS ( \
        INSERT INTO click_applied (shard, first_ms, first_seq, last_ms, last_seq) \
        SELECT * FROM input WHERE NOT EXISTS (SELECT 1 FROM overlapping) \
        RETURNING 1 \
    ) \
    SELECT (SELECT count(*) FROM overlapping) AS overlapping, \
           (SELECT count(*) FROM inserted) AS inserted";

// A visitor whose row is new is a first visit of that day; RETURNING names exactly those
// (ON CONFLICT DO NOTHING returns nothing for rows already there, or inserted meanwhile by a
// concurrent transaction, which then counted it).
const INSERT_VISITORS: &str = "\
    INSERT INTO click_visitors (link_id, day, visitor) \
    SELECT * FROM unnest($1::int8[], $2::date[], $3::bytea[]) \
    ON CONFLICT DO NOTHING \
    RETURNING link_id, day, visitor";

const UPSERT_HOURLY: &str = "\
    INSERT INTO click_hourly (link_id, hour, owner_id, humans, bots, unique_humans, unique_bots) \
    SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::int8[], $4::int8[], $5::int8[], \
        $6::int8[], $7::int8[]) \
    ON CONFLICT (link_id, hour) DO UPDATE SET \
        humans = click_hourly.humans + excluded.humans, \
        bots = click_hourly.bots + excluded.bots, \
        unique_humans = click_hourly.unique_humans + excluded.unique_humans, \
        unique_bots = click_hourly.unique_bots + excluded.unique_bots";

const UPSERT_DAILY: &str = "\
    INSERT INTO click_daily (link_id, day, owner_id, dimension, value, humans, bots) \
    SELECT * FROM unnest($1::int8[], $2::date[], $3::int8[], $4::text[], $5::text[], \
        $6::int8[], $7::int8[]) \
    ON CONFLICT (link_id, day, dimension, value) DO UPDATE SET \
        humans = click_daily.humans + excluded.humans, \
        bots = click_daily.bots + excluded.bots";

// The rows are locked in id order first (an UPDATE ... FROM may visit them in any order the
// join likes), so two workers counting the same links queue instead of deadlocking. NO KEY
// UPDATE does not block the foreign-key checks of the rollup inserts.
const ADD_LINK_CLICKS: &str = "\
    WITH input AS ( \
        SELECT * FROM unnest($1::int8[], $2::int8[]) AS i(id, humans) \
    ), locked AS ( \
        SELECT l.id FROM links l JOIN input i ON i.id = l.id ORDER BY l.id \
        FOR NO KEY UPDATE OF l \
    ) \
    UPDATE links SET clicks = links.clicks + i.humans \
    FROM input i JOIN locked k ON k.id = i.id WHERE links.id = i.id";

const DELETE_VISITORS: &str = "DELETE FROM click_visitors WHERE day < $1";

const DELETE_APPLIED: &str = "\
    DELETE FROM click_applied WHERE shard = $1 AND (last_ms, last_seq) < ($2, $3)";

impl PgRepository {
    /// The links of `codes`, deleted ones included; unknown codes are left out.
    #[tracing::instrument(
        name = "postgres links_by_code",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", codes = codes.len()),
        err(level = "warn")
    )]
    pub async fn links_by_code(&self, codes: &[&str]) -> Result<Vec<LinkRef>, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            let rows = client
                .query_typed(LINKS_BY_CODE, &[(&codes, Type::TEXT_ARRAY)])
                .await?;
            Ok(rows
                .iter()
                .map(|row| LinkRef {
                    id: row.get("id"),
                    code: row.get("code"),
                    owner_id: row.get("owner_id"),
                })
                .collect())
        })
        .await
    }

    /// For each `(shard, id)`, whether an applied range holds it, in the same order.
    #[tracing::instrument(
        name = "postgres applied_entries",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", entries = entries.len()),
        err(level = "warn")
    )]
    pub async fn applied_entries(
        &self,
        entries: &[(u16, EntryId)],
    ) -> Result<Vec<bool>, RepoError> {
        let shards: Vec<i16> = entries.iter().map(|(s, _)| shard_column(*s)).collect();
        let ms: Vec<i64> = entries.iter().map(|(_, id)| id.ms).collect();
        let seq: Vec<i64> = entries.iter().map(|(_, id)| id.seq).collect();
        self.idempotent(|| async {
            let client = self.connection().await?;
            let rows = client
                .query_typed(
                    APPLIED_ENTRIES,
                    &[
                        (&shards, Type::INT2_ARRAY),
                        (&ms, Type::INT8_ARRAY),
                        (&seq, Type::INT8_ARRAY),
                    ],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get("applied")).collect())
        })
        .await
    }

    /// Writes `rollup` and its ranges in one transaction: the ranges (unless one overlaps an
    /// applied one: then nothing, [`Applied::Overlap`]), the visitors, the hourly and daily
    /// rollups and `links.clicks`.
    ///
    /// Safe to retry, and retried on a broken connection, a deadlock or a serialization
    /// failure: if a commit did happen and only its answer was lost, the retry finds its own
    /// ranges and reports an overlap, writing nothing twice.
    #[tracing::instrument(
        name = "postgres apply_rollup",
        skip_all,
        fields(
            otel.kind = "client",
            db.system = "postgresql",
            clicks = rollup.clicks,
            ranges = rollup.ranges.len()
        ),
        err(level = "warn")
    )]
    pub async fn apply_rollup(&self, rollup: &Rollup) -> Result<Applied, RepoError> {
        self.idempotent(|| self.apply_once(rollup)).await
    }

    async fn apply_once(&self, rollup: &Rollup) -> Result<Applied, RepoError> {
        let mut client = self.connection().await?;
        let tx = client.transaction().await?;
        lock_shards(&tx, rollup).await?;
        if insert_ranges(&tx, &rollup.ranges).await? > 0 {
            // Dropping the transaction rolls it back.
            return Ok(Applied::Overlap);
        }
        let mut hourly: BTreeMap<(i64, DateTime<Utc>), (Counts, Counts)> = rollup
            .hourly
            .iter()
            .map(|(key, counts)| (*key, (*counts, Counts::default())))
            .collect();
        for (link, at, bot) in first_visits(&tx, rollup).await? {
            if let Some((_, unique)) = hourly.get_mut(&(link, hour_of(at))) {
                unique.add(bot, 1);
            }
        }
        upsert_hourly(&tx, &rollup.owners, &hourly).await?;
        upsert_daily(&tx, &rollup.owners, &rollup.daily).await?;
        add_link_clicks(&tx, &rollup.human_clicks()).await?;
        tx.commit().await?;
        Ok(Applied::Committed)
    }

    /// Deletes the visitor hashes of days before `day`. Returns how many went.
    #[tracing::instrument(
        name = "postgres delete_visitors_before",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn delete_visitors_before(&self, day: NaiveDate) -> Result<u64, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            Ok(client
                .execute_typed(DELETE_VISITORS, &[(&day, Type::DATE)])
                .await?)
        })
        .await
    }

    /// Deletes the applied ranges of `shard` that end before `id`: no entry before the oldest
    /// one still pending can be delivered again, so nobody will ask about them.
    #[tracing::instrument(
        name = "postgres delete_applied_before",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", shard),
        err(level = "warn")
    )]
    pub async fn delete_applied_before(&self, shard: u16, id: EntryId) -> Result<u64, RepoError> {
        let shard = shard_column(shard);
        self.idempotent(|| async {
            let client = self.connection().await?;
            Ok(client
                .execute_typed(
                    DELETE_APPLIED,
                    &[
                        (&shard, Type::INT2),
                        (&id.ms, Type::INT8),
                        (&id.seq, Type::INT8),
                    ],
                )
                .await?)
        })
        .await
    }
}

/// `click_applied.shard` is a smallint; shards are below `clicks::MAX_STREAMS` (256).
fn shard_column(shard: u16) -> i16 {
    i16::try_from(shard).unwrap_or(i16::MAX)
}

type Params<'a> = Vec<(&'a (dyn ToSql + Sync), Type)>;

async fn lock_shards(
    tx: &tokio_postgres::Transaction<'_>,
    rollup: &Rollup,
) -> Result<(), RepoError> {
    let shards: BTreeSet<u16> = rollup.ranges.iter().map(|r| r.shard).collect();
    let exclusive: Vec<bool> = shards
        .iter()
        .map(|s| rollup.claimed_shards.contains(s))
        .collect();
    let shards: Vec<i32> = shards.into_iter().map(i32::from).collect();
    let params: Params<'_> = vec![
        (&shards, Type::INT4_ARRAY),
        (&exclusive, Type::BOOL_ARRAY),
        (&SHARD_LOCK_CLASS, Type::INT4),
    ];
    tx.query_typed(LOCK_SHARDS, &params).await?;
    Ok(())
}

/// Inserts the ranges; returns how many overlapped applied ones (then none was inserted).
async fn insert_ranges(
    tx: &tokio_postgres::Transaction<'_>,
    ranges: &[AppliedRange],
) -> Result<i64, RepoError> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let shard: Vec<i16> = sorted.iter().map(|r| shard_column(r.shard)).collect();
    let first_ms: Vec<i64> = sorted.iter().map(|r| r.first.ms).collect();
    let first_seq: Vec<i64> = sorted.iter().map(|r| r.first.seq).collect();
    let last_ms: Vec<i64> = sorted.iter().map(|r| r.last.ms).collect();
    let last_seq: Vec<i64> = sorted.iter().map(|r| r.last.seq).collect();
    let params: Params<'_> = vec![
        (&shard, Type::INT2_ARRAY),
        (&first_ms, Type::INT8_ARRAY),
        (&first_seq, Type::INT8_ARRAY),
        (&last_ms, Type::INT8_ARRAY),
        (&last_seq, Type::INT8_ARRAY),
    ];
    let row = tx.query_typed_one(INSERT_RANGES, &params).await?;
    Ok(row.get("overlapping"))
}

/// Inserts the batch's visitors; returns the first visits of their day: (link, time of the
/// click, bot).
async fn first_visits(
    tx: &tokio_postgres::Transaction<'_>,
    rollup: &Rollup,
) -> Result<Vec<(i64, DateTime<Utc>, bool)>, RepoError> {
    if rollup.visitors.is_empty() {
        return Ok(Vec::new());
    }
    let links: Vec<i64> = rollup.visitors.keys().map(|k| k.0).collect();
    let days: Vec<NaiveDate> = rollup.visitors.keys().map(|k| k.1).collect();
    let hashes: Vec<&[u8]> = rollup.visitors.keys().map(|k| k.2.as_slice()).collect();
    let params: Params<'_> = vec![
        (&links, Type::INT8_ARRAY),
        (&days, Type::DATE_ARRAY),
        (&hashes, Type::BYTEA_ARRAY),
    ];
    let rows = tx.query_typed(INSERT_VISITORS, &params).await?;
    let mut first = Vec::with_capacity(rows.len());
    for row in rows {
        let visitor: &[u8] = row.get("visitor");
        let Ok(visitor) = <[u8; 16]>::try_from(visitor) else {
            continue;
        };
        let key = (row.get("link_id"), row.get("day"), visitor);
        if let Some(click) = rollup.visitors.get(&key) {
            first.push((key.0, click.at, click.bot));
        }
    }
    Ok(first)
}

async fn upsert_hourly(
    tx: &tokio_postgres::Transaction<'_>,
    owners: &BTreeMap<i64, Option<i64>>,
    hourly: &BTreeMap<(i64, DateTime<Utc>), (Counts, Counts)>,
) -> Result<(), RepoError> {
    let links: Vec<i64> = hourly.keys().map(|k| k.0).collect();
    let hours: Vec<DateTime<Utc>> = hourly.keys().map(|k| k.1).collect();
    let owner: Vec<Option<i64>> = links.iter().map(|l| owners[l]).collect();
    let humans: Vec<i64> = hourly.values().map(|(c, _)| c.humans).collect();
    let bots: Vec<i64> = hourly.values().map(|(c, _)| c.bots).collect();
    let unique_humans: Vec<i64> = hourly.values().map(|(_, u)| u.humans).collect();
    let unique_bots: Vec<i64> = hourly.values().map(|(_, u)| u.bots).collect();
    let params: Params<'_> = vec![
        (&links, Type::INT8_ARRAY),
        (&hours, Type::TIMESTAMPTZ_ARRAY),
        (&owner, Type::INT8_ARRAY),
        (&humans, Type::INT8_ARRAY),
        (&bots, Type::INT8_ARRAY),
        (&unique_humans, Type::INT8_ARRAY),
        (&unique_bots, Type::INT8_ARRAY),
    ];
    tx.execute_typed(UPSERT_HOURLY, &params).await?;
    Ok(())
}

async fn upsert_daily(
    tx: &tokio_postgres::Transaction<'_>,
    owners: &BTreeMap<i64, Option<i64>>,
    daily: &BTreeMap<(i64, NaiveDate, Dimension, String), Counts>,
) -> Result<(), RepoError> {
    let links: Vec<i64> = daily.keys().map(|k| k.0).collect();
    let days: Vec<NaiveDate> = daily.keys().map(|k| k.1).collect();
    let owner: Vec<Option<i64>> = links.iter().map(|l| owners[l]).collect();
    let dimensions: Vec<&str> = daily.keys().map(|k| k.2.as_str()).collect();
    let values: Vec<&str> = daily.keys().map(|k| k.3.as_str()).collect();
    let humans: Vec<i64> = daily.values().map(|c| c.humans).collect();
    let bots: Vec<i64> = daily.values().map(|c| c.bots).collect();
    let params: Params<'_> = vec![
        (&links, Type::INT8_ARRAY),
        (&days, Type::DATE_ARRAY),
        (&owner, Type::INT8_ARRAY),
        (&dimensions, Type::TEXT_ARRAY),
        (&values, Type::TEXT_ARRAY),
        (&humans, Type::INT8_ARRAY),
        (&bots, Type::INT8_ARRAY),
    ];
    tx.execute_typed(UPSERT_DAILY, &params).await?;
    Ok(())
}

async fn add_link_clicks(
    tx: &tokio_postgres::Transaction<'_>,
    clicks: &BTreeMap<i64, i64>,
) -> Result<(), RepoError> {
    if clicks.is_empty() {
        return Ok(());
    }
    let links: Vec<i64> = clicks.keys().copied().collect();
    let humans: Vec<i64> = clicks.values().copied().collect();
    let params: Params<'_> = vec![(&links, Type::INT8_ARRAY), (&humans, Type::INT8_ARRAY)];
    tx.execute_typed(ADD_LINK_CLICKS, &params).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid time")
    }

    fn link() -> LinkRef {
        LinkRef {
            id: 7,
            code: "abc".to_owned(),
            owner_id: Some(3),
        }
    }

    fn click<'a>(link: &'a LinkRef, at: DateTime<Utc>, bot: bool, v: Option<u8>) -> Click<'a> {
        Click {
            link,
            at,
            bot,
            visitor: v.map(|b| [b; 16]),
            values: [
                (Dimension::Referrer, "news.example"),
                (Dimension::Country, "DE"),
                (Dimension::Browser, "Firefox"),
                (Dimension::Os, "Linux"),
                (Dimension::Device, "desktop"),
                (Dimension::Source, "link"),
            ],
        }
    }

    #[test]
    fn entry_ids_parse_print_and_order_as_redis_orders_them() {
        let id: EntryId = "1764600000123-7".parse().expect("valid");
        assert_eq!(
            id,
            EntryId {
                ms: 1_764_600_000_123,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1764600000123-7");
        assert!("5-10".parse::<EntryId>().expect("valid") > "5-9".parse().expect("valid"));
        for bad in [
            "",
            "5",
            "5-",
            "-5",
            "a-1",
            "1-1-1",
            "18446744073709551615-0",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clicks_land_in_their_utc_hour_and_day_split_into_humans_and_bots() {
        let link = link();
        let mut rollup = Rollup::new(at("2026-01-01T00:00:00Z").date_naive());
        rollup.add(&click(&link, at("2026-03-01T10:59:59Z"), false, None));
        rollup.add(&click(&link, at("2026-03-01T10:00:00Z"), true, None));
        rollup.add(&click(&link, at("2026-03-01T11:00:00Z"), false, None));

        let ten = rollup.hourly[&(7, at("2026-03-01T10:00:00Z"))];
        assert_eq!(ten, Counts { humans: 1, bots: 1 });
        let eleven = rollup.hourly[&(7, at("2026-03-01T11:00:00Z"))];
        assert_eq!(eleven, Counts { humans: 1, bots: 0 });
        let day = at("2026-03-01T00:00:00Z").date_naive();
        let country = rollup.daily[&(7, day, Dimension::Country, "DE".to_owned())];
        assert_eq!(country, Counts { humans: 2, bots: 1 });
        assert_eq!(rollup.human_clicks()[&7], 2);
    }

    #[test]
    fn a_visitor_keeps_its_earliest_click_of_the_day_and_old_days_are_not_tracked() {
        let link = link();
        let mut rollup = Rollup::new(at("2026-03-01T00:00:00Z").date_naive());
        rollup.add(&click(&link, at("2026-03-01T12:00:00Z"), false, Some(1)));
        rollup.add(&click(&link, at("2026-03-01T09:30:00Z"), false, Some(1)));
        rollup.add(&click(&link, at("2026-02-28T23:00:00Z"), false, Some(2)));

        assert_eq!(rollup.visitors.len(), 1, "the day before is not tracked");
        let first = rollup.visitors.values().next().expect("one visitor");
        assert_eq!(first.at, at("2026-03-01T09:30:00Z"));
    }

    #[test]
    fn long_values_are_cut_and_empty_ones_are_unknown() {
        let link = link();
        let long = "é".repeat(200); // 400 bytes
        let mut c = click(&link, at("2026-03-01T10:00:00Z"), false, None);
        c.values[0] = (Dimension::Referrer, &long);
        c.values[1] = (Dimension::Country, "");
        let mut rollup = Rollup::new(at("2026-03-01T00:00:00Z").date_naive());
        rollup.add(&c);

        let values: Vec<&str> = rollup.daily.keys().map(|k| k.3.as_str()).collect();
        assert!(values.contains(&"(unknown)"));
        let cut = values.iter().find(|v| v.starts_with('é')).expect("kept");
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.len() >= MAX_VALUE_BYTES - 1);
    }

    #[test]
    fn hours_truncate_before_the_epoch_too() {
        assert_eq!(
            hour_of(at("1969-12-31T23:30:00Z")),
            at("1969-12-31T23:00:00Z")
        );
    }
}
