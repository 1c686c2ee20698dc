//! The analytics worker: one step, [`Worker::process_once`], and a loop that only adds
//! waiting, backoff and housekeeping.
//!
//! A step reads a batch (entries that came back first, then new ones), classifies and counts
//! it, commits the rollups with the batch's entry ranges in one transaction, and only then
//! acknowledges the entries. A batch whose commit fails is kept and retried by the next step,
//! so nothing is acknowledged that did not count, and nothing counts twice (see
//! `kurz_repository::analytics`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_redis::redis::RedisError;
use kurz_http::backoff::Backoff;
use kurz_repository::analytics::{
    Applied, Click, Dimension, EntryId, LinkRef, Rollup, oldest_visitor_day,
};
use kurz_repository::clicks::ClickEvent;
use kurz_repository::{PgRepository, RepoError};
use kurz_telemetry::metrics::names;
use moka::sync::Cache;

use crate::classify::{Classifier, GeoIp};
use crate::settings::Settings;
use crate::streams::{Entry, GroupState, Streams, is_no_group};

/// Links kept by code. An entry is a few dozen bytes; a code never changes link, so entries
/// never go stale and the cache only bounds memory.
const LINK_CACHE_CAPACITY: u64 = 100_000;

/// How often the lag and pending gauges are sampled, and how often old visitor hashes and
/// applied ranges are deleted.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);
const HOUSEKEEP_EVERY: Duration = Duration::from_secs(60);

/// Attempts at a batch whose ranges keep overlapping what other workers apply meanwhile.
/// The second attempt looks every entry up, so a third is needed only if another worker
/// claimed the same entries in between.
const MAX_APPLY_ATTEMPTS: u32 = 3;

/// What the worker assumes of entries before it has read any: full batches of the redirect
/// service's default `KURZ_CLICK_BATCH`, so that a start on a backlog of full entries does
/// not take thousands of them in its first transaction. Small entries (a quiet service) show
/// in the first read, and the count grows from there.
const FIRST_ENTRY_SIZE: f64 = 512.0;

/// What one step did. An entry is a batch of clicks, so some counts are of entries and some
/// of clicks, as each says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries read new from the streams.
    pub read: usize,
    /// Entries that came back: claimed from another consumer or this one's own pending list.
    pub came_back: usize,
    /// Clicks counted now.
    pub applied: usize,
    /// Clicks applied before (their entry came back after its commit): only acknowledged. An
    /// entry trimmed from its stream while pending comes back without its clicks: none here.
    pub duplicate: usize,
    /// Entries that are not batches of clicks: acknowledged and dropped.
    pub invalid: usize,
    /// Clicks on a code no link has: acknowledged and dropped.
    pub unknown_link: usize,
    /// Pending entries trimmed from their stream before anyone applied them: lost.
    pub trimmed: usize,
}

/// Why a step failed. Nothing of a failed step is acknowledged unless it committed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("reading the click streams failed")]
    Read(#[source] RedisError),
    #[error("writing the rollups failed")]
    Commit(#[source] RepoError),
    /// The rollups committed; the entries stay pending and are acknowledged by the next step
    /// (or, if this worker dies, found applied by the one that claims them).
    #[error("acknowledging applied entries failed")]
    Ack(#[source] RedisError),
    #[error("other workers kept applying this batch's entries meanwhile")]
    Contended,
}

impl StepError {
    /// The `stage` label of the retry counter.
    pub fn stage(&self) -> &'static str {
        match self {
            Self::Read(_) => "read",
            Self::Commit(_) | Self::Contended => "commit",
            Self::Ack(_) => "ack",
        }
    }
}

/// Why the worker would not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("KURZ_GEOIP_DB: cannot read the country database at {path}")]
    GeoIp {
        path: String,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error(transparent)]
    Database(#[from] RepoError),
    #[error("Redis: creating the consumer groups failed")]
    Redis(#[source] RedisError),
}

/// A batch between its read and its acknowledgement.
#[derive(Debug, Default)]
struct Batch {
    entries: Vec<Entry>,
    outcome: Outcome,
    /// Committed (or nothing to commit): only the acknowledgement is left.
    committed: bool,
}

#[derive(Debug)]
pub struct Worker {
    repo: PgRepository,
    streams: Streams,
    classifier: Classifier,
    links: Cache<String, LinkRef>,
    /// The batch a failed step left: the next step finishes it before reading anything.
    held: Option<Batch>,
    /// Where each shard's `XAUTOCLAIM` goes on.
    claim_cursors: Vec<String>,
    /// Whether this consumer's own pending list was read through after start.
    own_pending_done: bool,
    /// `KURZ_ANALYTICS_BATCH`: about how many clicks to read per stream.
    batch: usize,
    /// Clicks per entry lately (a moving average of the reads), to turn `batch` into
    /// entries.
    entry_size: f64,
}

impl Worker {
    /// Opens the country database, checks the schema and creates the consumer groups.
    pub async fn build(settings: &Settings) -> Result<Self, BuildError> {
        let geoip = match &settings.geoip_db {
            Some(path) => Some(GeoIp::open(path).map_err(|source| BuildError::GeoIp {
                path: path.display().to_string(),
                source,
            })?),
            None => None,
        };
        let repo = PgRepository::new(&settings.database, "kurz-analytics")?;
        repo.check_schema().await?;
        let streams = Streams::connect(&settings.redis, &settings.streams)
            .await
            .map_err(BuildError::Redis)?;
        Ok(Self {
            repo,
            streams,
            classifier: Classifier::new(geoip),
            links: Cache::new(LINK_CACHE_CAPACITY),
            held: None,
            claim_cursors: vec![EntryId::ZERO.to_string(); usize::from(settings.streams.shards)],
            own_pending_done: false,
            batch: settings.streams.batch,
            entry_size: FIRST_ENTRY_SIZE,
        })
    }

    pub fn repository(&self) -> &PgRepository {
        &self.repo
    }

    /// One step: finish the batch a failed step left, or read a new one (entries that came
    /// back first; new entries without waiting if some did, else waiting up to
    /// `KURZ_ANALYTICS_BLOCK_MS`), apply it in one transaction and acknowledge it.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    pub async fn process_once(&mut self) -> Result<Outcome, StepError> {
        self.step(true).await
    }

    /// [`Self::process_once`] as if the process died between COMMIT and XACK: the batch is
    /// applied and left pending. For tests of exactly-once delivery.
    #[doc(hidden)]
    pub async fn process_once_without_ack(&mut self) -> Result<Outcome, StepError> {
        self.step(false).await
    }

    async fn step(&mut self, ack: bool) -> Result<Outcome, StepError> {
        let mut batch = match self.held.take() {
            Some(batch) => batch,
            None => self.read_batch().await?,
        };
        if !batch.committed {
            match self.apply(&batch.entries, &mut batch.outcome).await {
                Ok(()) => {
                    batch.committed = true;
                    record(&batch.outcome);
                }
                Err(e) => {
                    self.held = Some(batch);
                    return Err(e);
                }
            }
        }
        if ack && let Err(e) = self.streams.ack(&batch.entries).await {
            self.held = Some(batch);
            return Err(StepError::Ack(e));
        }
        Ok(batch.outcome)
    }

    async fn read_batch(&mut self) -> Result<Batch, StepError> {
        let batch = self.try_read_batch().await;
        if batch.is_err() {
            // A read or claim whose reply was lost (a timeout, a dropped connection) may still
            // have delivered entries to this consumer; only its own pending list knows them.
            // Read it first next time rather than leave them to another worker's claim.
            self.own_pending_done = false;
        }
        batch
    }

    async fn try_read_batch(&mut self) -> Result<Batch, StepError> {
        let mut entries = Vec::new();
        let mut outcome = Outcome::default();
        let count = entries_per_read(self.batch, self.entry_size);
        if !self.own_pending_done {
            let own = self
                .streams
                .read_own_pending(count)
                .await
                .map_err(StepError::Read)?;
            self.own_pending_done = own.is_empty();
            entries.extend(own);
        }
        if entries.is_empty() {
            let (claimed, trimmed) = self
                .streams
                .claim(&mut self.claim_cursors, count)
                .await
                .map_err(StepError::Read)?;
            outcome.trimmed = trimmed;
            entries.extend(claimed);
        }
        outcome.came_back = entries.len();
        let new = self.streams.read_new(entries.is_empty(), count).await;
        let new = match new {
            Err(e) if is_no_group(&e) => {
                // Redis lost the streams (a restart without persistence): make the groups
                // again, and read on the next step.
                self.streams
                    .create_groups()
                    .await
                    .map_err(StepError::Read)?;
                Vec::new()
            }
            other => other.map_err(StepError::Read)?,
        };
        outcome.read = new.len();
        entries.extend(new);
        let sizes = entries
            .iter()
            .filter_map(|e| e.events.as_ref().ok().map(Vec::len));
        self.entry_size = averaged(self.entry_size, sizes);
        Ok(Batch {
            entries,
            outcome,
            committed: false,
        })
    }

    /// Counts `entries` and commits the counts; fills in `outcome`'s counts.
    async fn apply(&self, entries: &[Entry], outcome: &mut Outcome) -> Result<(), StepError> {
        let links = self.links_of(entries).await.map_err(StepError::Commit)?;
        // Entries that came back may have been applied; so may any entry once a batch has
        // overlapped (another worker claimed some of them while this one held them).
        let mut look_up_all = false;
        for _ in 0..MAX_APPLY_ATTEMPTS {
            let check: Vec<&Entry> = entries
                .iter()
                .filter(|e| look_up_all || e.came_back)
                .collect();
            let applied = self.applied(&check).await.map_err(StepError::Commit)?;
            let (rollup, counts) = self.rollup(entries, &links, &applied, look_up_all);
            *outcome = Outcome {
                read: outcome.read,
                came_back: outcome.came_back,
                trimmed: outcome.trimmed,
                ..counts
            };
            if rollup.is_empty() {
                return Ok(());
            }
            let started = Instant::now();
            let result = self.repo.apply_rollup(&rollup).await;
            metrics::histogram!(names::ANALYTICS_BATCH_COMMIT).record(started.elapsed());
            match result.map_err(StepError::Commit)? {
                Applied::Committed => return Ok(()),
                Applied::Overlap => {
                    metrics::counter!(names::ANALYTICS_OVERLAPS).increment(1);
                    tracing::info!("a batch overlapped entries applied by another worker");
                    look_up_all = true;
                }
            }
        }
        Err(StepError::Contended)
    }

    /// The links of the entries' codes, from the cache or one query for the rest.
    async fn links_of(&self, entries: &[Entry]) -> Result<HashMap<String, LinkRef>, RepoError> {
        let mut found = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        let events = entries
            .iter()
            .filter_map(|e| e.events.as_ref().ok())
            .flatten();
        for event in events {
            if found.contains_key(&event.code) || missing.contains(&event.code.as_str()) {
                continue;
            }
            match self.links.get(&event.code) {
                Some(link) => {
                    found.insert(event.code.clone(), link);
                }
                None => missing.push(&event.code),
            }
        }
        if !missing.is_empty() {
            for link in self.repo.links_by_code(&missing).await? {
                self.links.insert(link.code.clone(), link.clone());
                found.insert(link.code.clone(), link);
            }
        }
        Ok(found)
    }

    /// Which of `entries` are applied already, by (shard, id).
    async fn applied(
        &self,
        entries: &[&Entry],
    ) -> Result<BTreeMap<(u16, EntryId), bool>, RepoError> {
        if entries.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<(u16, EntryId)> = entries.iter().map(|e| (e.shard, e.id)).collect();
        let applied = self.repo.applied_entries(&ids).await?;
        Ok(ids.into_iter().zip(applied).collect())
    }

    /// The batch's rollup and what became of each entry. Entries looked up are recorded one
    /// by one; the others (read new, in order) as one run per shard.
    fn rollup(
        &self,
        entries: &[Entry],
        links: &HashMap<String, LinkRef>,
        looked_up: &BTreeMap<(u16, EntryId), bool>,
        look_up_all: bool,
    ) -> (Rollup, Outcome) {
        let mut rollup = Rollup::new(oldest_visitor_day(Utc::now()));
        let mut outcome = Outcome::default();
        let mut runs: BTreeMap<u16, (EntryId, EntryId)> = BTreeMap::new();
        for entry in entries {
            let checked = look_up_all || entry.came_back;
            if checked && looked_up.get(&(entry.shard, entry.id)) == Some(&true) {
                outcome.duplicate += entry.events.as_ref().map_or(0, Vec::len);
                continue;
            }
            if !checked {
                runs.entry(entry.shard)
                    .and_modify(|(_, last)| *last = entry.id)
                    .or_insert((entry.id, entry.id));
            }
            let Ok(events) = &entry.events else {
                outcome.invalid += 1;
                continue;
            };
            let mut counted = 0;
            for event in events {
                let Some(link) = links.get(&event.code) else {
                    outcome.unknown_link += 1;
                    continue;
                };
                self.add(&mut rollup, link, event);
                counted += 1;
            }
            if checked && counted > 0 {
                rollup.record_entry(entry.shard, entry.id);
            }
            outcome.applied += counted;
        }
        for (shard, (first, last)) in runs {
            rollup.record_run(shard, first, last);
        }
        (rollup, outcome)
    }

    /// Classifies `event` and counts it into `rollup`.
    fn add(&self, rollup: &mut Rollup, link: &LinkRef, event: &ClickEvent) {
        let class = self.classifier.classify(event);
        rollup.add(&Click {
            link,
            at: event.at,
            bot: class.bot,
            visitor: event.visitor,
            values: [
                (Dimension::Referrer, &class.referrer),
                (Dimension::Country, &class.country),
                (Dimension::Browser, &*class.browser),
                (Dimension::Os, &*class.os),
                (Dimension::Device, class.device),
                (Dimension::Source, event.source.as_str()),
            ],
        });
    }

    /// Samples each shard's lag and pending entries into their gauges; returns the states.
    pub async fn observe(&self) -> Result<Vec<Option<GroupState>>, RedisError> {
        let states = self.streams.groups().await?;
        for (shard, state) in (0u16..).zip(&states) {
            let Some(state) = state else { continue };
            let shard = shard.to_string();
            if let Some(lag) = state.lag {
                metrics::gauge!(names::ANALYTICS_STREAM_LAG, "shard" => shard.clone())
                    .set(lag as f64);
            }
            metrics::gauge!(names::ANALYTICS_PENDING, "shard" => shard).set(state.pending as f64);
        }
        Ok(states)
    }

    /// Deletes what can never be asked about again: visitor hashes of days before yesterday
    /// (UTC) and applied ranges that end before every entry still pending.
    pub async fn housekeep(&self, now: DateTime<Utc>) -> Result<Housekept, HousekeepError> {
        let states = self.observe().await?;
        let visitors = self
            .repo
            .delete_visitors_before(oldest_visitor_day(now))
            .await?;
        let mut ranges = 0;
        for (shard, state) in (0u16..).zip(&states) {
            if let Some(state) = state {
                ranges += self
                    .repo
                    .delete_applied_before(shard, state.settled_before)
                    .await?;
            }
        }
        Ok(Housekept { visitors, ranges })
    }

    /// Runs steps until `shutdown` resolves, finishing the step in progress first (a read
    /// waits at most `KURZ_ANALYTICS_BLOCK_MS`; a transaction is bounded by the database
    /// deadline). Failures back off from 100 ms, doubling up to 5 s; a held batch is retried
    /// until it commits.
    pub async fn run_until_stopped(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = backoff();
        let mut pause = Duration::ZERO;
        let mut observed = tokio::time::Instant::now();
        let mut housekept = observed;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(pause) => {}
            }
            pause = match self.process_once().await {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    metrics::counter!(names::ANALYTICS_RETRIES, "stage" => e.stage()).increment(1);
                    let next = backoff.after_failure();
                    tracing::warn!(
                        error = %e,
                        cause = %error_chain(&e),
                        retry_in_ms = next.as_millis() as u64,
                        "analytics step failed"
                    );
                    next
                }
            };
            if housekept.elapsed() >= HOUSEKEEP_EVERY {
                housekept = tokio::time::Instant::now();
                observed = housekept;
                match self.housekeep(Utc::now()).await {
                    Ok(done) if done.visitors + done.ranges > 0 => {
                        tracing::info!(
                            visitors = done.visitors,
                            ranges = done.ranges,
                            "housekeeping done"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics::counter!(names::ANALYTICS_RETRIES, "stage" => "housekeeping")
                            .increment(1);
                        tracing::warn!(error = %e, cause = %error_chain(&e), "housekeeping failed");
                    }
                }
            } else if observed.elapsed() >= OBSERVE_EVERY {
                observed = tokio::time::Instant::now();
                if let Err(e) = self.observe().await {
                    tracing::debug!(error = %e, "sampling the stream gauges failed");
                }
            }
        }
        tracing::info!("analytics worker stopped");
    }
}

/// What one housekeeping pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekept {
    pub visitors: u64,
    pub ranges: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HousekeepError {
    #[error("reading the consumer groups failed")]
    Redis(#[from] RedisError),
    #[error("deleting old rows failed")]
    Database(#[from] RepoError),
}

fn record(outcome: &Outcome) {
    let counts = [
        ("applied", outcome.applied),
        ("duplicate", outcome.duplicate),
        ("invalid", outcome.invalid),
        ("unknown_link", outcome.unknown_link),
        ("trimmed", outcome.trimmed),
    ];
    for (label, n) in counts {
        if n > 0 {
            metrics::counter!(names::ANALYTICS_EVENTS, "outcome" => label).increment(n as u64);
        }
    }
    if outcome.came_back > 0 {
        metrics::counter!(names::ANALYTICS_CLAIMED).increment(outcome.came_back as u64);
    }
    if outcome.trimmed > 0 {
        tracing::warn!(
            trimmed = outcome.trimmed,
            "pending click entries were trimmed from their stream before being applied"
        );
    }
}

/// The whole cause chain of an error, for a log line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

/// Entries to read per stream: as many as make about `batch` clicks at `entry_size` clicks
/// each, at least one.
fn entries_per_read(batch: usize, entry_size: f64) -> usize {
    ((batch as f64 / entry_size).round() as usize).clamp(1, batch)
}

/// `average` moved halfway to the mean of `sizes` (entries that decoded), or left as it is
/// if there are none.
fn averaged(average: f64, sizes: impl Iterator<Item = usize>) -> f64 {
    let (n, total) = sizes.fold((0usize, 0usize), |(n, total), size| (n + 1, total + size));
    if n == 0 {
        return average;
    }
    let mean = (total as f64 / n as f64).max(1.0);
    (average + mean) / 2.0
}

/// Failures back off from 100 ms, doubling up to 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_take_as_many_entries_as_make_the_batch_of_clicks_at_the_recent_size() {
        assert_eq!(entries_per_read(1_000, FIRST_ENTRY_SIZE), 2);
        assert_eq!(entries_per_read(1_000, 1.0), 1_000);
        assert_eq!(entries_per_read(7, FIRST_ENTRY_SIZE), 1, "at least one");
        // A quiet service's one-click entries: the count grows over a few reads.
        let mut size = FIRST_ENTRY_SIZE;
        for _ in 0..12 {
            size = averaged(size, [1, 1, 2, 1].into_iter());
        }
        assert!((1.0..1.5).contains(&size), "{size}");
        assert!(entries_per_read(1_000, size) > 600);
        assert_eq!(averaged(size, std::iter::empty()), size, "nothing read");
    }

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s_and_starts_over_after_a_success() {
        let mut backoff = backoff();
        let pauses: Vec<u64> = (0..8)
            .map(|_| backoff.after_failure().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(backoff.reset(), Duration::ZERO);
        assert_eq!(backoff.after_failure(), Duration::from_millis(100));
    }
}
