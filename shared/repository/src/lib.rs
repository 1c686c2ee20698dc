#![doc = include_str!("../README.md")]
//! # Layout
//! - [`model`]: domain types (`Link`, `NewLink`, `CachedLink`, `Owner`).
//! - [`accounts`]: accounts, API keys and scopes, with their SQL.
//! - [`token`]: the API key format: minting, checksum, digest, display hint.
//! - [`clicks`]: click events and their encoding as Redis stream entries (redirect to
//!   analytics).
//! - [`analytics`]: the rollups the analytics worker writes from them, exactly once.
//! - [`codes`]: the code alphabet, code checks and random key generation.
//! - [`error`]: `RepoError` (PostgreSQL) and `CacheError` (Redis); neither knows HTTP.
//! - [`invalidation`]: cross-instance invalidation of in-process caches over Redis pub/sub.
//! - [`postgres`]: the pool, migrations, the schema check and the SQL of the key pool.
//! - [`links`]: the SQL of links and their idempotency keys.
//! - [`listing`]: listing and counting an owner's links (keyset pagination), and edits.
//! - [`stats`]: reading the click rollups: a link's or an owner's clicks over a range, per
//!   bucket, with the top values of each dimension and the top links.
//! - [`batch`]: group commit of link inserts.
//! - [`bulk`]: many links in one transaction (bulk creates, imports) and the import records.
//! - [`visits`]: visit limits, counted atomically in PostgreSQL (`PgRepository::count_visit`).
//! - [`breaker`]: the circuit breaker every PostgreSQL call goes through.
//! - [`cache`]: the Redis link cache.
//! - [`redis_conn`]: [`redis_conn::RedisConn`], one connection type for one Redis server and for
//!   a Redis Cluster.
//! - The traits below are what services program against, so a decorator (a circuit breaker,
//!   a metrics layer) or another backend can stand in without touching a handler.

pub mod accounts;
pub mod analytics;
pub mod batch;
pub mod breaker;
pub mod bulk;
pub mod cache;
pub mod clicks;
pub mod codes;
pub mod error;
pub mod invalidation;
pub mod links;
pub mod listing;
pub mod model;
pub mod postgres;
pub mod redis_conn;
pub mod stats;
pub mod token;
pub mod visits;

use std::future::Future;

pub use accounts::{Account, ApiKey, Credential, NewApiKey, Scope};
pub use breaker::{Breaker, BreakerState};
pub use cache::RedisCache;
pub use error::{CacheError, RepoError};
pub use model::{
    Behaviour, CachedLink, CodeSource, IdempotentCreate, Link, NewLink, Owner, RefillReport,
};
pub use postgres::PgRepository;
pub use visits::Visit;

/// Durable link storage: PostgreSQL, the source of truth.
pub trait LinkRepository: Send + Sync + 'static {
    /// Stores a link under a code already claimed from the key pool. Returns once committed.
    fn insert_with_key(
        &self,
        code: &str,
        link: &NewLink,
    ) -> impl Future<Output = Result<Link, RepoError>> + Send;

    /// Stores a link under a custom alias, reserving the alias and removing it from the key pool
    /// in the same transaction. [`RepoError::CodeTaken`] if any link or claim has it already.
    fn insert_with_alias(
        &self,
        alias: &str,
        link: &NewLink,
    ) -> impl Future<Output = Result<Link, RepoError>> + Send;

    /// Creates a link under an idempotency key, atomically with the key's record: the first
    /// request with `key` creates, a later one with the same `request` replays that link, and
    /// one with another `request` is a mismatch. Concurrent duplicates create one link.
    fn create_idempotent(
        &self,
        key: &str,
        request: &str,
        code: CodeSource<'_>,
        link: &NewLink,
    ) -> impl Future<Output = Result<IdempotentCreate, RepoError>> + Send;

    /// The live (not deleted) link with this code, expired or not.
    fn find(&self, code: &str) -> impl Future<Output = Result<Option<Link>, RepoError>> + Send;

    /// Deletes a live link within `owner`'s reach; `false` if there was none. The code stays
    /// reserved forever.
    fn delete(
        &self,
        code: &str,
        owner: Owner,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;

    /// Disables (`true`) or enables a live link; `None` if there is none. A disabled link
    /// keeps its code and answers 410.
    fn set_disabled(
        &self,
        code: &str,
        disabled: bool,
    ) -> impl Future<Output = Result<Option<Link>, RepoError>> + Send;

    /// One cheap round trip, for readiness checks.
    fn ping(&self) -> impl Future<Output = Result<(), RepoError>> + Send;
}

/// The pool of unused keys.
pub trait KeyRepository: Send + Sync + 'static {
    /// Claims up to `count` unused keys in one round trip. Claimed keys are recorded as issued
    /// before this returns, so they are never handed out again, even if the caller crashes.
    fn claim_keys(
        &self,
        count: usize,
    ) -> impl Future<Output = Result<Vec<String>, RepoError>> + Send;

    /// Puts keys that were claimed but never used back into the pool, at a clean shutdown.
    /// Keys that a link uses are left alone whatever the caller says. Returns how many went
    /// back.
    fn return_keys(&self, keys: &[String]) -> impl Future<Output = Result<u64, RepoError>> + Send;

    /// Number of unused keys in the pool, counted up to `cap` at most: a full count of a
    /// million-key pool is a parallel scan that takes both cores of a small machine for a
    /// moment, every few seconds; whoever asks only needs to know whether it is below a mark.
    fn pool_depth(&self, cap: u64) -> impl Future<Output = Result<u64, RepoError>> + Send;

    /// Generates `count` random keys of `length` characters and adds those not already in the
    /// pool or issued, in bulk (`COPY`).
    fn refill(
        &self,
        count: u64,
        length: usize,
    ) -> impl Future<Output = Result<RefillReport, RepoError>> + Send;
}

/// A cache in front of [`LinkRepository::find`]. Every method may fail, and callers treat a
/// failure as a miss: the cache is never the only copy of anything.
pub trait LinkCache: Send + Sync + 'static {
    /// `Ok(None)`: not cached. `Ok(Some(CachedLink::Missing))`: cached as unknown.
    fn get(
        &self,
        code: &str,
    ) -> impl Future<Output = Result<Option<CachedLink>, CacheError>> + Send;

    /// Caches a live link.
    fn put(
        &self,
        code: &str,
        link: &CachedLink,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Caches "no such link", unless the code was cached as a link meanwhile.
    fn put_missing(&self, code: &str) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Forgets a code.
    fn remove(&self, code: &str) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Tells every instance's in-process cache that the link behind `code` changed.
    fn publish_invalidation(
        &self,
        code: &str,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// One cheap round trip, for readiness checks.
    fn ping(&self) -> impl Future<Output = Result<(), CacheError>> + Send;
}
