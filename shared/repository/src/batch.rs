//! Group commit for link inserts.
//!
//! Each create still waits until its own row is committed, but concurrent creates share one
//! multi-row `INSERT` and one commit. There is no timer: inserts that arrive while a batch is
//! being committed queue up, and the next worker takes all of them at once. A lone create goes
//! out at once (no added latency); under load, batches grow with the commit latency, which is
//! exactly when sharing a commit pays.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kurz_telemetry::metrics::names;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument as _;

use crate::LinkRepository;
use crate::error::RepoError;
use crate::model::{Link, NewLink};
use crate::postgres::PgRepository;

/// Workers committing batches in turn: while one commits, the other collects the next batch.
const WORKERS: usize = 2;
/// Queued inserts beyond this wait for room (backpressure rather than unbounded memory).
const QUEUE: usize = 4_096;

struct Pending {
    code: String,
    link: NewLink,
    reply: oneshot::Sender<Result<Link, RepoError>>,
}

/// Counters of what the batcher did, for tests and metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    batches: AtomicU64,
    rows: AtomicU64,
    largest: AtomicU64,
}

impl BatchStats {
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn largest(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }

    fn record(&self, size: usize) {
        metrics::histogram!(names::CREATE_BATCH_SIZE).record(size as f64);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(size as u64, Ordering::Relaxed);
        self.largest.fetch_max(size as u64, Ordering::Relaxed);
    }
}

/// Inserts links under pool keys in shared batches.
#[derive(Debug, Clone)]
pub struct InsertBatcher {
    queue: mpsc::Sender<Pending>,
    stats: Arc<BatchStats>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

impl InsertBatcher {
    /// Starts the workers on the current runtime; they stop when every handle is dropped.
    pub fn spawn(repo: PgRepository, max_batch: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let stats = Arc::new(BatchStats::default());
        for _ in 0..WORKERS {
            tokio::spawn(work(
                repo.clone(),
                Arc::clone(&receiver),
                Arc::clone(&stats),
                max_batch.max(1),
            ));
        }
        Self { queue, stats }
    }

    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }

    /// Inserts one link and returns once its batch is committed.
    pub async fn insert(&self, code: String, link: NewLink) -> Result<Link, RepoError> {
        let (reply, answer) = oneshot::channel();
        let closed = || RepoError::Unavailable("the insert batcher stopped".into());
        // The shared insert runs in the batcher's task, outside any request's trace; this
        // span is the request's view of it: queueing, the multi-row insert and its commit.
        async {
            self.queue
                .send(Pending { code, link, reply })
                .await
                .map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        }
        .instrument(tracing::info_span!(
            "postgres insert (group commit)",
            otel.kind = "client",
            db.system = "postgresql"
        ))
        .await
    }
}

async fn work(
    repo: PgRepository,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    stats: Arc<BatchStats>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, max_batch).await == 0 {
                return; // every sender is gone
            }
        }
        stats.record(batch.len());
        let rows: Vec<(&str, &NewLink)> =
            batch.iter().map(|p| (p.code.as_str(), &p.link)).collect();
        match repo.insert_many(&rows).await {
            Ok(links) => {
                let mut by_code: HashMap<String, Link> =
                    links.into_iter().map(|l| (l.code.clone(), l)).collect();
                for pending in batch.drain(..) {
                    let result = by_code
                        .remove(&pending.code)
                        .ok_or_else(|| RepoError::Unavailable("the batch lost a row".into()));
                    let _ = pending.reply.send(result);
                }
            }
            Err(e) if e.is_unavailable() => {
                // PostgreSQL is away: every row failed for the same reason.
                tracing::warn!(error = %e, size = batch.len(), "batched insert failed");
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(RepoError::Unavailable(e.to_string().into())));
                }
            }
            Err(e) => {
                // One row broke the statement: insert one by one, so only that row fails and
                // each waiter gets its own, precise error.
                tracing::warn!(error = %e, size = batch.len(), "batched insert failed; inserting rows singly");
                for pending in batch.drain(..) {
                    let result = repo.insert_with_key(&pending.code, &pending.link).await;
                    let _ = pending.reply.send(result);
                }
            }
        }
    }
}
