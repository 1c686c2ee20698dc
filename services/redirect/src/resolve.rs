//! Cache-first resolution of a code: Redis, then PostgreSQL, then fill Redis.
//!
//! Redis is only a cache: any Redis failure counts as a miss and the answer comes from
//! PostgreSQL. Cache fills happen in the background, so a miss costs the client one Redis
//! round trip plus one PostgreSQL query, not a write on top.

use chrono::{DateTime, Utc};
use kurz_repository::codes::is_well_formed;
use kurz_repository::{CachedLink, LinkCache, LinkRepository, RepoError};

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
}

impl<R, C> Resolver<R, C>
where
    R: LinkRepository,
    C: LinkCache + Clone,
{
    pub fn new(repo: R, cache: C) -> Self {
        Self { repo, cache }
    }

    pub fn repository(&self) -> &R {
        &self.repo
    }

    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// Resolves `code` at `now`. Malformed codes are [`Resolution::Missing`] without any I/O.
    pub async fn resolve(&self, code: &str, now: DateTime<Utc>) -> Result<Resolution, RepoError> {
        if !is_well_formed(code) {
            return Ok(Resolution::Missing);
        }
        let cached = match self.cache.get(code).await {
            Ok(cached) => cached,
            Err(e) => {
                tracing::debug!(error = %e, "cache read failed; asking PostgreSQL");
                None
            }
        };
        let entry = match cached {
            Some(entry) => entry,
            None => self.load(code).await?,
        };
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

    /// Reads PostgreSQL and fills the cache in the background.
    async fn load(&self, code: &str) -> Result<CachedLink, RepoError> {
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
