//! The in-memory buffer of keys this instance has claimed from the pool.
//!
//! A create takes a key from memory, so it never waits on key generation and never costs a
//! round trip for its key. The buffer claims a whole batch in one round trip
//! (`KeyRepository::claim_keys`) and starts the next claim in the background when a quarter
//! of a batch is left, so under steady load it never runs dry. If it does run dry (a burst, a
//! start), the requests that find it empty share a single claim instead of each making one.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kurz_repository::{KeyRepository, RepoError};

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The pool in PostgreSQL is empty: the keypool worker is behind or not running.
    #[error("the key pool is empty")]
    PoolEmpty,
    /// The claim this request waited for failed (the failure itself was logged).
    #[error("claiming keys failed")]
    ClaimFailed,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Debug)]
pub struct KeyBuffer<K> {
    repo: K,
    batch: usize,
    keys: Mutex<Vec<String>>,
    /// Serializes claims: at most one round trip in flight per instance.
    claim: tokio::sync::Mutex<()>,
    /// Completed claims, so a request that waited for someone else's claim knows it happened.
    claims_done: AtomicU64,
    /// How the last claim ended: [`CLAIM_OK`] or [`CLAIM_FAILED`].
    last_claim: AtomicU8,
    prefetching: AtomicBool,
}

const CLAIM_OK: u8 = 0;
const CLAIM_FAILED: u8 = 1;

impl<K: KeyRepository> KeyBuffer<K> {
    pub fn new(repo: K, batch: usize) -> Arc<Self> {
        Arc::new(Self {
            repo,
            batch,
            keys: Mutex::new(Vec::with_capacity(batch)),
            claim: tokio::sync::Mutex::new(()),
            claims_done: AtomicU64::new(0),
            last_claim: AtomicU8::new(CLAIM_OK),
            prefetching: AtomicBool::new(false),
        })
    }

    /// Keys held, unused, right now (also the key buffer gauge).
    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    /// A key nobody else has or will ever get.
    pub async fn take(self: &Arc<Self>) -> Result<String, KeyError> {
        if let Some(key) = self.pop() {
            return Ok(key);
        }
        let seen = self.claims_done.load(Ordering::Acquire);
        let _claiming = self.claim.lock().await;
        if let Some(key) = self.pop() {
            return Ok(key);
        }
        // Someone else's claim finished while we queued, and still nothing is here: share its
        // outcome now rather than queue another round trip behind each waiter.
        if self.claims_done.load(Ordering::Acquire) != seen {
            return Err(match self.last_claim.load(Ordering::Acquire) {
                CLAIM_FAILED => KeyError::ClaimFailed,
                _ => KeyError::PoolEmpty,
            });
        }
        self.claim_batch().await?;
        self.pop().ok_or(KeyError::PoolEmpty)
    }

    /// `count` keys nobody else has or will ever get (a bulk create's), claiming as many
    /// batches as that takes. All or none: if the pool runs dry, the keys taken so far go back
    /// into the buffer.
    pub async fn take_many(self: &Arc<Self>, count: usize) -> Result<Vec<String>, KeyError> {
        let mut taken = Vec::with_capacity(count);
        loop {
            {
                let mut keys = self.lock();
                let from = keys.len().saturating_sub(count - taken.len());
                taken.extend(keys.drain(from..));
            }
            if taken.len() == count {
                break;
            }
            let _claiming = self.claim.lock().await;
            if self.depth() > 0 {
                continue; // someone else's claim landed while we queued
            }
            let claimed = self.claim_batch().await;
            if claimed.is_err() || self.depth() == 0 {
                self.give_back(taken);
                return Err(match claimed {
                    Err(e) => KeyError::Repo(e),
                    Ok(()) => KeyError::PoolEmpty,
                });
            }
        }
        if self.depth() < self.low_mark() {
            self.prefetch();
        }
        Ok(taken)
    }

    /// Puts keys taken from this buffer back, for a caller that gave up before any of them
    /// reached PostgreSQL (a refused bulk call). Never for keys an insert may have used.
    pub fn give_back(&self, keys: Vec<String>) {
        self.lock().extend(keys);
    }

    /// Gives every buffered key back to the pool; call once no request can take one any more
    /// (after the server drained). Waits for a claim in flight, so none lands afterwards.
    pub async fn return_unused(&self) {
        let _claiming = self.claim.lock().await;
        let keys = std::mem::take(&mut *self.lock());
        if keys.is_empty() {
            return;
        }
        match self.repo.return_keys(&keys).await {
            Ok(returned) => tracing::info!(returned, "unused keys returned to the pool"),
            // They stay issued: never handed out, never reused. Only capacity is lost.
            Err(e) => {
                tracing::warn!(error = %e, count = keys.len(), "returning unused keys failed")
            }
        }
    }

    /// Pops a key and starts a background claim when the buffer runs low.
    fn pop(self: &Arc<Self>) -> Option<String> {
        let (key, left) = {
            let mut keys = self.lock();
            let key = keys.pop()?;
            (key, keys.len())
        };
        if left < self.low_mark() {
            self.prefetch();
        }
        Some(key)
    }

    fn low_mark(&self) -> usize {
        (self.batch / 4).max(1)
    }

    fn prefetch(self: &Arc<Self>) {
        if self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let claiming = this.claim.lock().await;
            if this.depth() < this.low_mark()
                && let Err(e) = this.claim_batch().await
            {
                tracing::warn!(error = %e, "background key claim failed");
            }
            drop(claiming);
            this.prefetching.store(false, Ordering::Release);
        });
    }

    /// One round trip; call with `self.claim` held.
    async fn claim_batch(&self) -> Result<(), RepoError> {
        let claimed = self.repo.claim_keys(self.batch).await;
        let outcome = if claimed.is_ok() {
            CLAIM_OK
        } else {
            CLAIM_FAILED
        };
        self.last_claim.store(outcome, Ordering::Release);
        self.claims_done.fetch_add(1, Ordering::AcqRel);
        let claimed = claimed?;
        tracing::debug!(count = claimed.len(), "claimed keys");
        self.lock().extend(claimed);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A panic while holding this lock cannot leave the Vec half-updated, so a poisoned
        // lock is still safe to use.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
