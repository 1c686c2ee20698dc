//! The refill worker: one step, [`Worker::refill_once`], and a loop that only adds waiting.

use kurz_telemetry::metrics::names;
use std::future::Future;
use std::time::Duration;

use kurz_repository::{KeyRepository, PgRepository, RefillReport, RepoError};

use crate::settings::{PoolSettings, Settings};

/// Longest pause between attempts while PostgreSQL keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a create's `Idempotency-Key` is honoured: a client may retry for a day.
pub const IDEMPOTENCY_KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum RefillOutcome {
    /// The pool was at or above the low watermark (counting stops there, so that is all it
    /// says about the depth).
    Sufficient,
    /// The pool was refilled towards the high watermark.
    Refilled {
        depth_before: u64,
        report: RefillReport,
    },
}

#[derive(Debug, Clone)]
pub struct Worker {
    repo: PgRepository,
    pool: PoolSettings,
}

impl Worker {
    /// Connects and checks that the schema is recent enough.
    pub async fn build(settings: &Settings) -> Result<Self, RepoError> {
        let repo = PgRepository::new(&settings.database, "kurz-keypool")?;
        repo.check_schema().await?;
        Ok(Self {
            repo,
            pool: settings.pool,
        })
    }

    pub fn repository(&self) -> &PgRepository {
        &self.repo
    }

    /// One step: if the pool is below its low watermark, fill it up to the high watermark in
    /// one bulk insert, then vacuum the claimed rows away.
    #[tracing::instrument(skip_all, err)]
    pub async fn refill_once(&self) -> Result<RefillOutcome, RepoError> {
        let depth = self.repo.pool_depth(self.pool.low_watermark).await?;
        if depth >= self.pool.low_watermark {
            return Ok(RefillOutcome::Sufficient);
        }
        let report = self.add_keys(self.pool.high_watermark - depth).await?;
        Ok(RefillOutcome::Refilled {
            depth_before: depth,
            report,
        })
    }

    /// Deletes idempotency keys past their lifetime, so the table stays a day's worth of
    /// creates. Returns how many went.
    pub async fn sweep_idempotency_keys(&self) -> Result<u64, RepoError> {
        let deleted = self
            .repo
            .delete_idempotency_keys_older_than(IDEMPOTENCY_KEY_LIFETIME)
            .await?;
        if deleted > 0 {
            tracing::info!(deleted, "expired idempotency keys deleted");
        }
        Ok(deleted)
    }

    /// Generates `count` keys and adds the new ones, whatever the watermarks say.
    pub async fn add_keys(&self, count: u64) -> Result<RefillReport, RepoError> {
        let report = self.repo.refill(count, self.pool.key_length).await?;
        metrics::counter!(names::KEYS_REFILLED).increment(report.inserted);
        metrics::histogram!(names::REFILL_DURATION).record(report.elapsed);
        tracing::info!(
            generated = report.generated,
            inserted = report.inserted,
            elapsed_ms = report.elapsed.as_millis() as u64,
            keys_per_sec = report.rate().round() as u64,
            "key pool refilled"
        );
        // Claims leave dead rows at the head of the pool's index; vacuuming after each refill
        // keeps a claim's cost flat however far the pool drains. A failure here is harmless
        // (autovacuum catches up), so it is logged, not returned.
        if let Err(e) = self.repo.vacuum_key_pool().await {
            tracing::warn!(error = %e, "vacuum of key_pool failed");
        }
        Ok(report)
    }

    /// Runs steps every check interval until `shutdown` resolves. A step in progress is
    /// finished first (it is one transaction, bounded by the statement timeout), so stopping
    /// never leaves half a batch behind. Failures back off exponentially, up to 30 s.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(pause) => {}
            }
            let step = match self.refill_once().await {
                Ok(_) => self.sweep_idempotency_keys().await.map(drop),
                Err(e) => Err(e),
            };
            pause = match step {
                Ok(()) => self.pool.check_interval,
                Err(e) => {
                    // max after min: a check interval above the cap must not panic `clamp`.
                    let next = (pause * 2).min(MAX_BACKOFF).max(self.pool.check_interval);
                    tracing::warn!(error = %e, retry_in_ms = next.as_millis() as u64, "refill failed");
                    next
                }
            };
        }
        tracing::info!("key pool worker stopped");
    }
}
