//! Resolution of a code, cheapest tier first: this process's memory, then Redis, then
//! PostgreSQL.
//!
//! - The in-process cache (moka) answers hot codes without any I/O. Its entries live briefly
//!   (`KURZ_LOCAL_CACHE_TTL_MS`) and are dropped at once when the create service publishes a
//!   change (see `kurz_repository::invalidation`).
//! - A miss there is single-flight: concurrent requests for the same code wait for one load,
//!   so a hot code that no cache holds costs one backend lookup per instance, not one per
//!   request.
//! - Redis is only a cache: any Redis failure counts as a miss and the answer comes from
//!   PostgreSQL. Redis fills happen in the background, so a miss costs the client one Redis
//!   round trip plus one PostgreSQL query, not a write on top.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kurz_repository::codes::is_well_formed;
use kurz_repository::invalidation::Invalidation;
use kurz_repository::{CachedLink, LinkCache, LinkRepository, RepoError};
use moka::future::Cache;

/// What a code resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        target_url: String,
        expires_at: Option<DateTime<Utc>>,
    },
    Expired,
    Missing,
}

#[derive(Debug, Clone)]
pub struct Resolver<R, C> {
    repo: R,
    cache: C,
    local: Cache<String, CachedLink>,
}

impl<R, C> Resolver<R, C>
where
    R: LinkRepository,
    C: LinkCache + Clone,
{
    pub fn new(repo: R, cache: C, local_ttl: Duration, local_capacity: u64) -> Self {
        let local = Cache::builder()
            .max_capacity(local_capacity)
            .time_to_live(local_ttl)
            .build();
        Self { repo, cache, local }
    }

    pub fn repository(&self) -> &R {
        &self.repo
    }

    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// Resolves `code` at `now`. Malformed codes are [`Resolution::Missing`] without any I/O.
    pub async fn resolve(
        &self,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolution, Arc<RepoError>> {
        if !is_well_formed(code) {
            return Ok(Resolution::Missing);
        }
        // Errors are not cached: the next request tries again (the breaker decides how hard).
        let entry = self
            .local
            .try_get_with_by_ref(code, self.load(code))
            .await?;
        Ok(match entry {
            CachedLink::Missing => Resolution::Missing,
            CachedLink::Found { expires_at, .. } if expires_at.is_some_and(|at| at <= now) => {
                Resolution::Expired
            }
            CachedLink::Found {
                target_url,
                expires_at,
            } => Resolution::Found {
                target_url,
                expires_at,
            },
        })
    }

    /// Puts an answer in the in-process cache, as a load would (warm-up and benchmarks).
    pub async fn warm(&self, code: &str, entry: CachedLink) {
        self.local.insert(code.to_owned(), entry).await;
    }

    /// Applies a message from the invalidation channel to the in-process cache.
    pub async fn invalidate(&self, event: Invalidation) {
        match event {
            Invalidation::Code(code) => self.local.invalidate(&code).await,
            Invalidation::Resubscribed => self.local.invalidate_all(),
        }
    }

    /// Redis, then PostgreSQL (filling Redis in the background).
    async fn load(&self, code: &str) -> Result<CachedLink, RepoError> {
        match self.cache.get(code).await {
            Ok(Some(entry)) => return Ok(entry),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cache read failed; asking PostgreSQL"),
        }
        let entry = match self.repo.find(code).await? {
            Some(link) => CachedLink::from(&link),
            None => CachedLink::Missing,
        };
        let cache = self.cache.clone();
        let (code, fill) = (code.to_owned(), entry.clone());
        tokio::spawn(async move {
            let written = match &fill {
                CachedLink::Missing => cache.put_missing(&code).await,
                found => cache.put(&code, found).await,
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "cache fill failed");
            }
        });
        Ok(entry)
    }
}
