//! Resolution of a code, cheapest tier first: this process's memory, then Redis, then
//! PostgreSQL.
//!
//! - The in-process cache (moka) answers hot codes without any I/O. Its entries live briefly
//!   (`KURZ_LOCAL_CACHE_TTL_MS`) and are dropped at once when the create service publishes a
//!   change (see `kurz_repository::invalidation`).
//! - A miss there asks Redis, as is; only when Redis has no answer is the PostgreSQL lookup
//!   single-flight: concurrent requests for the same code wait for one load, so a hot code
//!   that no cache holds costs one database query per instance, not one per request. Redis
//!   answers most misses, and for those the single-flight bookkeeping (moka's waiter map and
//!   the load future) cost more than the duplicate `GET`s it would save on the shared
//!   multiplexed connection.
//! - Redis is only a cache: any Redis failure counts as a miss and the answer comes from
//!   PostgreSQL. Redis fills happen in the background, so a miss costs the client one Redis
//!   round trip plus one PostgreSQL query, not a write on top.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use foldhash::quality::RandomState;
use kurz_repository::codes::is_well_formed;
use kurz_repository::invalidation::Invalidation;
use kurz_repository::{CachedLink, LinkCache, LinkRepository, RepoError};
use kurz_telemetry::metrics::names;
use metrics::Counter;
use moka::future::Cache;

use crate::behaviour::LinkBehaviour;

/// What a code resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        /// The target URL, ready to be the `Location` header.
        location: HeaderValue,
        expires_at: Option<DateTime<Utc>>,
        /// `None` for a link with the default behaviour (most links). A limited link is
        /// `Found` until PostgreSQL says its visits are used up: no cache holds the count.
        behaviour: Option<Arc<LinkBehaviour>>,
    },
    /// Past its expiry date.
    Expired {
        /// Where to send people instead of a 410 page.
        expired_url: Option<HeaderValue>,
    },
    /// An admin disabled the link: 410 with a page saying so.
    Disabled,
    Missing,
}

/// An answer as the in-process cache keeps it: the URL already a header value and the
/// behaviour behind an `Arc`, whose clones are reference counts, so a hit copies and
/// allocates nothing (and for a link without a behaviour of its own, counts nothing either).
#[derive(Debug, Clone)]
enum Local {
    Found {
        location: HeaderValue,
        expires_at: Option<DateTime<Utc>>,
        behaviour: Option<Arc<LinkBehaviour>>,
    },
    Disabled,
    Missing,
}

impl From<CachedLink> for Local {
    fn from(link: CachedLink) -> Self {
        match link {
            CachedLink::Missing => Local::Missing,
            CachedLink::Disabled => Local::Disabled,
            CachedLink::Found {
                target_url,
                expires_at,
                behaviour,
            } => match HeaderValue::from_maybe_shared(Bytes::from(target_url)) {
                Ok(location) => Local::Found {
                    location,
                    expires_at,
                    behaviour: LinkBehaviour::of(&behaviour),
                },
                // The create API only stores URLs it serialized itself (visible ASCII), so
                // this means a row written by something else; a 404 beats a broken header.
                Err(_) => {
                    tracing::error!("a stored target URL is not a valid Location header");
                    Local::Missing
                }
            },
        }
    }
}

/// The in-process cache, hashed with foldhash rather than moka's default SipHash. Its keys are
/// codes from request paths, so whoever sends requests chooses them: the hasher must stay
/// keyed (seeded at random per process), or crafted codes could pile into one bucket. foldhash
/// is keyed that way (it is hashbrown's default), and SipHash was 5% of the CPU of
/// redirect-uniform (moka hashes a key for the table, the frequency sketch and the waiters).
/// The `quality` variant: moka takes bucket, segment and sketch indices from different bits
/// of one hash, so all of them must be well mixed.
type LocalCache = Cache<String, Local, RandomState>;

#[derive(Debug, Clone)]
pub struct Resolver<R, C> {
    repo: R,
    cache: C,
    local: LocalCache,
    lookups: Lookups,
}

/// The cache-lookup counters, registered once: looking a labelled series up in the recorder
/// on every request hashes and allocates its labels.
#[derive(Clone)]
struct Lookups {
    local_hit: Counter,
    local_miss: Counter,
    redis_hit: Counter,
    redis_negative: Counter,
    redis_miss: Counter,
}

impl Lookups {
    fn register() -> Self {
        let series = |tier: &'static str, result: &'static str| metrics::counter!(names::CACHE_LOOKUPS, "tier" => tier, "result" => result);
        Self {
            local_hit: series("local", "hit"),
            local_miss: series("local", "miss"),
            redis_hit: series("redis", "hit"),
            redis_negative: series("redis", "negative"),
            redis_miss: series("redis", "miss"),
        }
    }
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
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
            .build_with_hasher(RandomState::default());
        Self {
            repo,
            cache,
            local,
            lookups: Lookups::register(),
        }
    }

    pub fn repository(&self) -> &R {
        &self.repo
    }

    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// Resolves `code` at `now`. Malformed codes are [`Resolution::Missing`] without any I/O.
    /// The span records which tier answered (`cache.local`, then `cache.redis`).
    #[tracing::instrument(
        name = "resolve",
        skip_all,
        fields(cache.local = tracing::field::Empty, cache.redis = tracing::field::Empty)
    )]
    pub async fn resolve(
        &self,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolution, Arc<RepoError>> {
        if !is_well_formed(code) {
            return Ok(Resolution::Missing);
        }
        // A plain lookup first: the single-flight call builds the (large) load future even
        // when the entry is there, which the profile showed on every hit.
        let entry = match self.local.get(code).await {
            Some(entry) => {
                lookup(&self.lookups.local_hit, "cache.local", "hit");
                entry
            }
            // Errors are not cached: the next request tries again (the breaker decides how
            // hard).
            None => {
                lookup(&self.lookups.local_miss, "cache.local", "miss");
                // Boxed: the load's state machine is large, and unboxed it would be part of
                // every request's future, copied around on hits that never run it.
                Box::pin(self.load(code)).await?
            }
        };
        Ok(match entry {
            Local::Missing => Resolution::Missing,
            Local::Disabled => Resolution::Disabled,
            Local::Found {
                expires_at,
                behaviour,
                ..
            } if expires_at.is_some_and(|at| at <= now) => Resolution::Expired {
                expired_url: behaviour.and_then(|b| b.expired_url.clone()),
            },
            Local::Found {
                location,
                expires_at,
                behaviour,
            } => Resolution::Found {
                location,
                expires_at,
                behaviour,
            },
        })
    }

    /// Puts an answer in the in-process cache, as a load would (warm-up and benchmarks).
    pub async fn warm(&self, code: &str, entry: CachedLink) {
        self.local.insert(code.to_owned(), entry.into()).await;
    }

    /// Applies a message from the invalidation channel to the in-process cache.
    pub async fn invalidate(&self, event: Invalidation) {
        match event {
            Invalidation::Code(code) => self.local.invalidate(&code).await,
            Invalidation::Resubscribed => self.local.invalidate_all(),
        }
    }

    /// A code this process does not hold: Redis, then PostgreSQL (single-flight, see the
    /// module docs); either answer is kept in memory.
    async fn load(&self, code: &str) -> Result<Local, Arc<RepoError>> {
        if let Some(entry) = self.ask_redis(code).await {
            let entry = Local::from(entry);
            self.local.insert(code.to_owned(), entry.clone()).await;
            return Ok(entry);
        }
        // Boxed on its own: the single-flight future is large, and inside this one it would
        // be copied into the box on every miss, including the many Redis answers that never
        // run it (6% of redirect-uniform's CPU went to that copy).
        Box::pin(self.local.try_get_with_by_ref(code, async {
            self.ask_postgres(code).await.map(Local::from)
        }))
        .await
    }

    /// Redis' answer, if it has one; down or slow counts as a miss.
    async fn ask_redis(&self, code: &str) -> Option<CachedLink> {
        match self.cache.get(code).await {
            Ok(Some(entry)) => {
                let (counter, result) = match entry {
                    CachedLink::Missing => (&self.lookups.redis_negative, "negative"),
                    CachedLink::Found { .. } | CachedLink::Disabled => {
                        (&self.lookups.redis_hit, "hit")
                    }
                };
                lookup(counter, "cache.redis", result);
                Some(entry)
            }
            Ok(None) => {
                lookup(&self.lookups.redis_miss, "cache.redis", "miss");
                None
            }
            Err(e) => {
                lookup(&self.lookups.redis_miss, "cache.redis", "miss");
                tracing::debug!(error = %e, "cache read failed; asking PostgreSQL");
                None
            }
        }
    }

    /// PostgreSQL's answer, written to Redis in the background.
    async fn ask_postgres(&self, code: &str) -> Result<CachedLink, RepoError> {
        let entry = match self.repo.find(code).await? {
            Some(link) => CachedLink::from(&link),
            None => CachedLink::Missing,
        };
        let cache = self.cache.clone();
        let (code, fill) = (code.to_owned(), entry.clone());
        tokio::spawn(async move {
            let written = match &fill {
                CachedLink::Missing => cache.put_missing(&code).await,
                other => cache.put(&code, other).await,
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "cache fill failed");
            }
        });
        Ok(entry)
    }
}

/// Counts a cache lookup and records it on the current `resolve` span (`field`).
fn lookup(counter: &Counter, field: &'static str, result: &'static str) {
    counter.increment(1);
    tracing::Span::current().record(field, result);
}
