//! Where the buckets of a stats series start, in a time zone: hours, days, ISO weeks (from
//! Monday) and calendar months, as the zone's clocks show them, DST included.
//!
//! - Day, week and month buckets start at the first instant of their local period: local
//!   midnight, or where a transition skipped midnight (the first instant after the gap). A
//!   period the clocks skip entirely (Samoa's 30 December 2011) has no bucket. Days that DST
//!   lengthens or shortens are one bucket of 25 or 23 hours.
//! - Hour buckets start wherever the local clock shows a whole hour, and at each offset
//!   change: the repeated hour of a fall-back is two buckets (`01:00-04:00`, `01:00-05:00` in
//!   New York), the skipped hour of a spring-forward none, and a half-hour shift (Lord Howe
//!   Island) makes a half-hour bucket.
//!
//! Offsets change at most once within a few hours in the IANA database; the searches below
//! rely on that.

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most buckets a series may have: enough for 41 days of hours or 83 years of months,
/// and a bound on the work and the size of one answer.
pub const MAX_BUCKETS: usize = 1_000;

/// The length of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    Month,
}

impl Granularity {
    /// The default for a range of this length: up to 3 days hours, up to 93 days days, up to
    /// 731 days (two years) weeks, months beyond; at most about a hundred buckets each.
    pub fn for_range(length: TimeDelta) -> Self {
        if length <= TimeDelta::days(3) {
            Self::Hour
        } else if length <= TimeDelta::days(93) {
            Self::Day
        } else if length <= TimeDelta::days(731) {
            Self::Week
        } else {
            Self::Month
        }
    }
}

/// Why a range cannot be cut into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketError {
    /// More than [`MAX_BUCKETS`].
    TooMany,
    /// The calendar runs out (a range near the limits of representable dates).
    OutOfRange,
}

/// The start of every bucket from the one holding `from` to the one holding the last instant
/// before `to` (`from < to`), ascending.
pub fn bucket_starts(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
    tz: Tz,
) -> Result<Vec<DateTime<Utc>>, BucketError> {
    let mut starts = Vec::new();
    let mut push = |start: DateTime<Utc>| {
        if starts.len() == MAX_BUCKETS {
            return Err(BucketError::TooMany);
        }
        starts.push(start);
        Ok(())
    };
    if granularity == Granularity::Hour {
        let mut start = hour_start(from, tz)?;
        while start < to {
            push(start)?;
            start = next_hour(start, tz)?;
        }
    } else {
        let mut period = period_start(local(from, tz)?.date(), granularity);
        // Never after `from`, whatever a transition did to the period's first instant.
        let mut start = resolve(period.and_time(chrono::NaiveTime::MIN), tz)?.min(from);
        while start < to {
            push(start)?;
            // A skipped period resolves to where the next one starts: no bucket of its own.
            let previous = start;
            while start <= previous {
                period = next_period(period, granularity).ok_or(BucketError::OutOfRange)?;
                start = resolve(period.and_time(chrono::NaiveTime::MIN), tz)?;
            }
        }
    }
    Ok(starts)
}

/// The first day of the period holding `day`.
fn period_start(day: NaiveDate, granularity: Granularity) -> NaiveDate {
    match granularity {
        Granularity::Hour | Granularity::Day => day,
        Granularity::Week => day
            .checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_monday())))
            .unwrap_or(day),
        Granularity::Month => day.with_day(1).unwrap_or(day),
    }
}

fn next_period(day: NaiveDate, granularity: Granularity) -> Option<NaiveDate> {
    match granularity {
        Granularity::Hour | Granularity::Day => day.checked_add_days(Days::new(1)),
        Granularity::Week => day.checked_add_days(Days::new(7)),
        Granularity::Month => day.checked_add_months(Months::new(1)),
    }
}

/// The offset from UTC in force at `at`, in seconds.
fn offset(at: DateTime<Utc>, tz: Tz) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
}

/// What the zone's clocks show at `at`.
fn local(at: DateTime<Utc>, tz: Tz) -> Result<NaiveDateTime, BucketError> {
    at.naive_utc()
        .checked_add_signed(TimeDelta::seconds(i64::from(offset(at, tz))))
        .ok_or(BucketError::OutOfRange)
}

/// The first instant whose local time is `wall` or later: `wall` itself when it happens (its
/// first occurrence, when a fall-back repeats it), the end of the gap when a spring-forward
/// skips it.
fn resolve(wall: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, BucketError> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Ok(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // Every offset is within ±26 h, so the instant is within 30 h of `wall` read as UTC.
            let guess = wall.and_utc();
            let window = TimeDelta::hours(30);
            let (low, high) = (
                guess
                    .checked_sub_signed(window)
                    .ok_or(BucketError::OutOfRange)?,
                guess
                    .checked_add_signed(window)
                    .ok_or(BucketError::OutOfRange)?,
            );
            first_where(low, high, |at| {
                local(at, tz).is_ok_and(|shown| shown >= wall)
            })
        }
    }
}

/// The start of the hour bucket holding `at`: back to the local whole hour, or to the offset
/// change if one came in between.
fn hour_start(at: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, BucketError> {
    let shown = local(at, tz)?;
    let into_hour = TimeDelta::seconds(i64::from(shown.minute() * 60 + shown.second()))
        + TimeDelta::nanoseconds(i64::from(shown.nanosecond()));
    let whole = at
        .checked_sub_signed(into_hour)
        .ok_or(BucketError::OutOfRange)?;
    let here = offset(at, tz);
    if offset(whole, tz) == here {
        return Ok(whole);
    }
    first_where(whole, at, |x| offset(x, tz) == here)
}

/// The start of the hour bucket after the one starting at `start`: the next local whole
/// hour, or an offset change before it.
fn next_hour(start: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, BucketError> {
    let shown = local(start, tz)?;
    let left = 3_600 - i64::from(shown.minute() * 60 + shown.second());
    let next = start
        .checked_add_signed(TimeDelta::seconds(left))
        .ok_or(BucketError::OutOfRange)?;
    let here = offset(start, tz);
    if offset(next, tz) == here {
        return Ok(next);
    }
    first_where(start, next, |x| offset(x, tz) != here)
}

/// The first whole second in `(low, high]` where `holds` starts to hold, given that it holds
/// at `high` and, from where it starts, to the end.
fn first_where(
    low: DateTime<Utc>,
    high: DateTime<Utc>,
    holds: impl Fn(DateTime<Utc>) -> bool,
) -> Result<DateTime<Utc>, BucketError> {
    let (mut low, mut high) = (low.timestamp(), high.timestamp());
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        let at = DateTime::from_timestamp(middle, 0).ok_or(BucketError::OutOfRange)?;
        if holds(at) {
            high = middle;
        } else {
            low = middle;
        }
    }
    DateTime::from_timestamp(high, 0).ok_or(BucketError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("a date-time")
            .with_timezone(&Utc)
    }

    fn zone(name: &str) -> Tz {
        name.parse().expect("a zone")
    }

    /// The starts as the zone shows them, with their offsets.
    fn shown(from: &str, to: &str, granularity: Granularity, tz: &str) -> Vec<String> {
        let tz = zone(tz);
        bucket_starts(at(from), at(to), granularity, tz)
            .expect("buckets")
            .into_iter()
            .map(|start| start.with_timezone(&tz).to_rfc3339())
            .collect()
    }

    #[test]
    fn a_fall_back_day_is_one_bucket_of_25_hours_and_the_offsets_follow() {
        let starts = shown(
            "2026-10-31T00:00:00-04:00",
            "2026-11-03T00:00:00-05:00",
            Granularity::Day,
            "America/New_York",
        );
        assert_eq!(
            starts,
            [
                "2026-10-31T00:00:00-04:00",
                "2026-11-01T00:00:00-04:00",
                "2026-11-02T00:00:00-05:00",
            ]
        );
        let tz = zone("America/New_York");
        let instants = bucket_starts(
            at("2026-10-31T00:00:00-04:00"),
            at("2026-11-03T00:00:00-05:00"),
            Granularity::Day,
            tz,
        )
        .expect("buckets");
        assert_eq!(instants[2] - instants[1], TimeDelta::hours(25));
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_two_hour_buckets() {
        let starts = shown(
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T03:00:00-05:00",
            Granularity::Hour,
            "America/New_York",
        );
        assert_eq!(
            starts,
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00",
            ]
        );
    }

    #[test]
    fn the_skipped_hour_of_a_spring_forward_has_no_bucket() {
        let starts = shown(
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T04:00:00-04:00",
            Granularity::Hour,
            "America/New_York",
        );
        assert_eq!(
            starts,
            ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"]
        );
    }

    #[test]
    fn a_half_hour_shift_makes_a_half_hour_bucket() {
        // Lord Howe Island moves from +10:30 to +11:00 at 02:00 local.
        let starts = shown(
            "2026-10-04T01:00:00+10:30",
            "2026-10-04T04:00:00+11:00",
            Granularity::Hour,
            "Australia/Lord_Howe",
        );
        assert_eq!(
            starts,
            [
                "2026-10-04T01:00:00+10:30",
                "2026-10-04T02:30:00+11:00",
                "2026-10-04T03:00:00+11:00",
            ]
        );
    }

    #[test]
    fn hours_and_days_of_a_half_hour_zone_start_at_half_past_utc() {
        assert_eq!(
            shown(
                "2026-03-01T04:45:00Z",
                "2026-03-01T06:00:00Z",
                Granularity::Hour,
                "Asia/Kolkata"
            ),
            ["2026-03-01T10:00:00+05:30", "2026-03-01T11:00:00+05:30",]
        );
        let tz = zone("Asia/Kolkata");
        let days = bucket_starts(
            at("2026-03-01T00:00:00Z"),
            at("2026-03-03T00:00:00Z"),
            Granularity::Day,
            tz,
        )
        .expect("buckets");
        assert_eq!(
            days,
            [
                at("2026-02-28T18:30:00Z"),
                at("2026-03-01T18:30:00Z"),
                at("2026-03-02T18:30:00Z"),
            ]
        );
    }

    #[test]
    fn a_midnight_that_never_happened_starts_its_day_after_the_gap() {
        // Brazil's DST began at midnight: 4 November 2018 started at 01:00.
        let starts = shown(
            "2018-11-03T12:00:00-03:00",
            "2018-11-05T12:00:00-02:00",
            Granularity::Day,
            "America/Sao_Paulo",
        );
        assert_eq!(
            starts,
            [
                "2018-11-03T00:00:00-03:00",
                "2018-11-04T01:00:00-02:00",
                "2018-11-05T00:00:00-02:00",
            ]
        );
    }

    #[test]
    fn a_day_the_clocks_skipped_has_no_bucket() {
        // Samoa crossed the date line: 29 December 2011 was followed by the 31st.
        let starts = shown(
            "2011-12-29T12:00:00-10:00",
            "2012-01-01T00:00:00+14:00",
            Granularity::Day,
            "Pacific/Apia",
        );
        assert_eq!(
            starts,
            ["2011-12-29T00:00:00-10:00", "2011-12-31T00:00:00+14:00"]
        );
    }

    #[test]
    fn weeks_start_on_monday_across_month_and_year_ends() {
        assert_eq!(
            shown(
                "2026-12-31T10:00:00Z",
                "2027-01-12T00:00:00Z",
                Granularity::Week,
                "UTC"
            ),
            [
                "2026-12-28T00:00:00+00:00",
                "2027-01-04T00:00:00+00:00",
                "2027-01-11T00:00:00+00:00",
            ]
        );
    }

    #[test]
    fn months_start_on_the_first_and_an_end_on_a_boundary_is_exclusive() {
        assert_eq!(
            shown(
                "2026-01-31T12:00:00+01:00",
                "2026-04-01T00:00:00+02:00",
                Granularity::Month,
                "Europe/Berlin"
            ),
            [
                "2026-01-01T00:00:00+01:00",
                "2026-02-01T00:00:00+01:00",
                "2026-03-01T00:00:00+01:00",
            ]
        );
    }

    #[test]
    fn a_thousand_buckets_are_allowed_and_one_more_is_refused() {
        let from = at("2026-01-01T00:00:00Z");
        let utc = zone("UTC");
        let thousand = bucket_starts(from, from + TimeDelta::hours(1_000), Granularity::Hour, utc);
        assert_eq!(thousand.map(|s| s.len()), Ok(MAX_BUCKETS));
        let more = bucket_starts(from, from + TimeDelta::hours(1_001), Granularity::Hour, utc);
        assert_eq!(more, Err(BucketError::TooMany));
        let centuries = bucket_starts(
            at("0001-01-01T00:00:00Z"),
            at("9999-12-31T00:00:00Z"),
            Granularity::Month,
            utc,
        );
        assert_eq!(centuries, Err(BucketError::TooMany));
    }

    #[test]
    fn the_default_granularity_follows_the_range_length() {
        let cases = [
            (TimeDelta::hours(1), Granularity::Hour),
            (TimeDelta::days(3), Granularity::Hour),
            (TimeDelta::days(3) + TimeDelta::seconds(1), Granularity::Day),
            (TimeDelta::days(93), Granularity::Day),
            (TimeDelta::days(94), Granularity::Week),
            (TimeDelta::days(731), Granularity::Week),
            (TimeDelta::days(732), Granularity::Month),
        ];
        for (length, expected) in cases {
            assert_eq!(Granularity::for_range(length), expected, "{length}");
        }
    }
}
