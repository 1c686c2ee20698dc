//! The Redis link cache.
//!
//! Keys are `kurz:link:{code}`. A value is `-` (no such link: a negative entry), `!` (the link
//! is disabled), or a live link:
//! - `{expires_at}|{target URL}` for a link with the default behaviour (most links), where
//!   `expires_at` is Unix milliseconds or nothing;
//! - `{expires_at};{status};{forward};{max_visits};{expired_url length}|{expired_url}{target}`
//!   otherwise, each field empty when unset (`forward` is `1` or empty).
//!
//! A hand-rolled format rather than JSON because it is read on every cache hit of the redirect
//! path. The URLs, the only free-form parts, come last (the first with its length), so they
//! need no escaping; the head before the first `|` holds only digits and `;`.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncConnectionConfig};
use deadpool_redis::{Manager, Pool, Runtime};
use kurz_settings::{RedisSettings, RedisTarget};
use kurz_telemetry::metrics::names;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;
use tracing::Instrument as _;

use crate::LinkCache;
use crate::error::CacheError;
use crate::model::{Behaviour, CachedLink};
use crate::redis_conn::{RedisConn, Tuning};

const KEY_PREFIX: &str = "kurz:link:";
const MISSING: &str = "-";
const DISABLED: &str = "!";

/// How long entries live.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    /// Live links. Bounds how long a missed invalidation (Redis down during a delete) can
    /// serve a stale answer.
    pub found: Duration,
    /// Unknown codes. Short, so a code probed before its link existed soon resolves anyway.
    pub missing: Duration,
}

/// [`LinkCache`] on Redis.
///
/// Reads and writes of entries (`get`, `put`, `put_missing`: the redirect path and create's
/// warm-up) go through one shared multiplexed connection: a pool checkout costs a round trip
/// of its own (deadpool-redis sends `UNWATCH` and `PING` when it recycles), which would double
/// the price of every miss. The manager reconnects by itself after a failure. Deletes,
/// invalidations and the readiness ping use the pool.
///
/// On a Redis Cluster there is no pool: the cluster connection is already one multiplexed
/// connection per node, and everything goes through it. Invalidations are then sharded
/// pub/sub (`SPUBLISH`), and a bulk warm-up sends its `SET`s key by key, concurrently, since
/// a pipeline must stay within one slot.
#[derive(Clone)]
pub struct RedisCache {
    pool: Option<Pool>,
    shared: RedisConn,
    /// The whole budget of one call, pool wait included.
    timeout: Duration,
    ttl: CacheTtl,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Builds the pool; no connection is opened until the first call.
    pub fn new(settings: &RedisSettings, ttl: CacheTtl) -> Result<Self, CacheError> {
        let pool = match &settings.target {
            RedisTarget::Single(url) => {
                let connection = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.command_timeout));
                let manager = Manager::new_with_config(url.expose_secret(), connection)
                    .map_err(|e| CacheError::Unavailable(Box::new(e)))?;
                let pool = Pool::builder(manager)
                    .max_size(settings.pool_size)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(settings.command_timeout))
                    .create_timeout(Some(settings.connect_timeout))
                    .recycle_timeout(Some(settings.command_timeout))
                    .build()
                    .map_err(|e| CacheError::Unavailable(Box::new(e)))?;
                Some(pool)
            }
            RedisTarget::Cluster(_) => None,
        };
        // Reconnects are attempted on the next command anyway; a few quick retries cover a
        // Redis restart (or a cluster's failover redirect) without piling up attempts while it
        // is down.
        let tuning = Tuning {
            response_timeout: settings.command_timeout,
            retries: 2,
        };
        let shared =
            RedisConn::lazy(settings, tuning).map_err(|e| CacheError::Unavailable(Box::new(e)))?;
        Ok(Self {
            pool,
            shared,
            timeout: settings.command_timeout,
            ttl,
        })
    }

    /// Runs one command on the shared multiplexed connection within the call budget.
    async fn run_shared<T, F, Fut>(&self, command: &'static str, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // A clone is a handle to the same connection: cheap, and no round trip.
        let call = async {
            f(self.shared.clone())
                .await
                .map_err(|e| CacheError::Unavailable(Box::new(e)))
        };
        self.within_budget(command, call).await
    }

    /// Runs one command on a pooled connection within the call budget, pool wait included;
    /// on a cluster (no pool) on the shared connection.
    async fn run<T, F, Fut>(&self, command: &'static str, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let call = async {
            let conn = match &self.pool {
                Some(pool) => {
                    let started = std::time::Instant::now();
                    let conn = pool.get().await;
                    metrics::histogram!(names::REDIS_POOL_WAIT).record(started.elapsed());
                    Conn::Pooled(conn.map_err(|e| CacheError::Unavailable(Box::new(e)))?)
                }
                None => Conn::Shared(self.shared.clone()),
            };
            f(conn)
                .await
                .map_err(|e| CacheError::Unavailable(Box::new(e)))
        };
        self.within_budget(command, call).await
    }

    /// The publish command: sharded pub/sub on a cluster, where a plain `PUBLISH` would be
    /// broadcast over the whole cluster bus and `SSUBSCRIBE`rs would not get it.
    fn publish_command(&self) -> &'static str {
        if self.shared.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    async fn within_budget<T>(
        &self,
        command: &'static str,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        within_budget(self.timeout, command, call).await
    }

    /// The shared multiplexed connection, for the other hot-path users of this Redis (the
    /// rate limits): they share it rather than open their own, so a process keeps one.
    pub fn connection(&self) -> RedisConn {
        self.shared.clone()
    }

    /// `KURZ_REDIS_COMMAND_TIMEOUT_MS`: the budget of one call.
    pub fn command_timeout(&self) -> Duration {
        self.timeout
    }

    /// Publishes `payload` on a pub/sub channel (see [`crate::invalidation`]).
    pub async fn publish(&self, channel: &'static str, payload: &str) -> Result<(), CacheError> {
        let publish = self.publish_command();
        self.run(publish, |mut conn| async move {
            redis::cmd(publish)
                .arg(channel)
                .arg(payload)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    fn ttl_of(&self, link: &CachedLink) -> Duration {
        match link {
            CachedLink::Found { expires_at, .. } => found_ttl(self.ttl.found, *expires_at),
            // A disabled link is rare and may be enabled again: as briefly as a negative
            // entry.
            CachedLink::Missing | CachedLink::Disabled => self.ttl.missing,
        }
    }

    /// Caches many live links in one pipelined round trip (a bulk create's warm-up), as
    /// [`LinkCache::put`] caches one, and tells the redirect instances about `announce` (the
    /// aliases among them) in a second one.
    pub async fn put_many(
        &self,
        links: &[(&str, CachedLink)],
        announce: &[&str],
    ) -> Result<(), CacheError> {
        let set = |code: &str, link: &CachedLink| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key(code))
                .arg(encode(link))
                .arg("PX")
                .arg(millis(self.ttl_of(link)));
            cmd
        };
        let sets: Vec<Cmd> = links.iter().map(|(code, link)| set(code, link)).collect();
        let name = if self.shared.is_cluster() {
            "SET (per key)"
        } else {
            "SET (pipeline)"
        };
        self.run_shared(name, |conn| async move {
            conn.query_all::<()>(sets).await.map(drop)
        })
        .await?;
        if announce.is_empty() {
            return Ok(());
        }
        // One channel, so one slot: a pipeline on a cluster too.
        let publish = self.publish_command();
        let mut publishes = redis::pipe();
        for code in announce {
            publishes
                .cmd(publish)
                .arg(crate::invalidation::CHANNEL)
                .arg(*code)
                .ignore();
        }
        self.run("PUBLISH (pipeline)", |mut conn| async move {
            publishes.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Samples the pool gauges; called when metrics are scraped.
    pub fn record_gauges(&self) {
        let Some(pool) = &self.pool else {
            return;
        };
        let status = pool.status();
        let in_use = status.size.saturating_sub(status.available);
        metrics::gauge!(names::REDIS_POOL_CONNECTIONS, "state" => "in_use").set(in_use as f64);
        metrics::gauge!(names::REDIS_POOL_CONNECTIONS, "state" => "idle")
            .set(status.available as f64);
        metrics::gauge!(names::REDIS_POOL_WAITING).set(status.waiting as f64);
    }
}

/// A connection for one call of [`RedisCache::run`]: from the pool, or the shared one on a
/// cluster.
enum Conn {
    Pooled(deadpool_redis::Connection),
    Shared(RedisConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Pooled(conn) => conn.req_packed_command(cmd),
            Self::Shared(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Pooled(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Shared(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(conn) => conn.get_db(),
            Self::Shared(conn) => conn.get_db(),
        }
    }
}

/// One Redis command as a client span, bounded by `budget`; a timeout is counted in
/// `kurz_redis_timeouts_total`. Every hot-path Redis call (cache, rate limits) goes through it.
pub async fn within_budget<T>(
    budget: Duration,
    command: &'static str,
    call: impl Future<Output = Result<T, CacheError>>,
) -> Result<T, CacheError> {
    let span = tracing::info_span!(
        "redis",
        otel.name = command,
        otel.kind = "client",
        db.system = "redis",
        db.operation = command
    );
    match tokio::time::timeout(budget, call).instrument(span).await {
        Ok(result) => result,
        Err(_) => {
            metrics::counter!(names::REDIS_TIMEOUTS).increment(1);
            Err(CacheError::Timeout(budget))
        }
    }
}

fn key(code: &str) -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + code.len());
    key.push_str(KEY_PREFIX);
    key.push_str(code);
    key
}

fn encode(link: &CachedLink) -> String {
    match link {
        CachedLink::Missing => MISSING.to_owned(),
        CachedLink::Disabled => DISABLED.to_owned(),
        CachedLink::Found {
            target_url,
            expires_at,
            behaviour,
        } => {
            let expires = expires_at
                .map(|at| at.timestamp_millis().to_string())
                .unwrap_or_default();
            if *behaviour == Behaviour::default() {
                return format!("{expires}|{target_url}");
            }
            let status = behaviour
                .redirect_status
                .map(|s| s.to_string())
                .unwrap_or_default();
            let forward = if behaviour.forward_query { "1" } else { "" };
            let max = behaviour
                .max_visits
                .map(|m| m.to_string())
                .unwrap_or_default();
            let expired = behaviour.expired_url.as_deref().unwrap_or_default();
            let expired_len = behaviour
                .expired_url
                .as_ref()
                .map(|u| u.len().to_string())
                .unwrap_or_default();
            format!("{expires};{status};{forward};{max};{expired_len}|{expired}{target_url}")
        }
    }
}

fn decode(value: &str) -> Result<CachedLink, CacheError> {
    match value {
        MISSING => return Ok(CachedLink::Missing),
        DISABLED => return Ok(CachedLink::Disabled),
        _ => {}
    }
    let (head, rest) = value.split_once('|').ok_or(CacheError::Corrupt)?;
    let mut fields = head.split(';');
    let expires_at = optional(fields.next())?
        .map(|millis| DateTime::<Utc>::from_timestamp_millis(millis).ok_or(CacheError::Corrupt))
        .transpose()?;
    let Some(status) = fields.next() else {
        return Ok(CachedLink::Found {
            target_url: rest.to_owned(),
            expires_at,
            behaviour: Behaviour::default(),
        });
    };
    let redirect_status = optional(Some(status))?
        .map(|s| u16::try_from(s).map_err(|_| CacheError::Corrupt))
        .transpose()?;
    let forward_query = fields.next().ok_or(CacheError::Corrupt)? == "1";
    let max_visits = optional(fields.next())?;
    let expired_len = optional(fields.next())?
        .map(|n| usize::try_from(n).map_err(|_| CacheError::Corrupt))
        .transpose()?;
    let (expired_url, target_url) = match expired_len {
        None => (None, rest),
        Some(n) if rest.is_char_boundary(n) => {
            let (expired, target) = rest.split_at(n);
            (Some(expired.to_owned()), target)
        }
        Some(_) => return Err(CacheError::Corrupt),
    };
    Ok(CachedLink::Found {
        target_url: target_url.to_owned(),
        expires_at,
        behaviour: Behaviour {
            redirect_status,
            forward_query,
            expired_url,
            max_visits,
        },
    })
}

/// A number field of an entry; empty is `None`, missing or malformed is corrupt.
fn optional(field: Option<&str>) -> Result<Option<i64>, CacheError> {
    match field.ok_or(CacheError::Corrupt)? {
        "" => Ok(None),
        digits => digits.parse().map(Some).map_err(|_| CacheError::Corrupt),
    }
}

/// A link that expires soon is cached only until it expires (at least a second), so dead
/// entries do not linger; a reader still checks the expiry, since it answers 410 past it.
fn found_ttl(ttl: Duration, expires_at: Option<DateTime<Utc>>) -> Duration {
    let until_expiry = match expires_at {
        None => ttl,
        // Already expired: negative, so `to_std` fails; keep the entry for the minimum.
        Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
    };
    ttl.min(until_expiry).max(Duration::from_secs(1))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl LinkCache for RedisCache {
    async fn get(&self, code: &str) -> Result<Option<CachedLink>, CacheError> {
        let key = key(code);
        let value: Option<String> = self
            .run_shared("GET", |mut conn| async move {
                redis::cmd("GET").arg(&key).query_async(&mut conn).await
            })
            .await?;
        value.as_deref().map(decode).transpose()
    }

    async fn put(&self, code: &str, link: &CachedLink) -> Result<(), CacheError> {
        let ttl = self.ttl_of(link);
        let (key, value) = (key(code), encode(link));
        self.run_shared("SET", |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn put_missing(&self, code: &str) -> Result<(), CacheError> {
        let key = key(code);
        let ttl = millis(self.ttl.missing);
        // NX: a create that cached the new link between our database miss and this write wins.
        self.run_shared("SET", |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(MISSING)
                .arg("PX")
                .arg(ttl)
                .arg("NX")
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn remove(&self, code: &str) -> Result<(), CacheError> {
        let key = key(code);
        self.run("DEL", |mut conn| async move {
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn publish_invalidation(&self, code: &str) -> Result<(), CacheError> {
        self.publish(crate::invalidation::CHANNEL, code).await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.run("PING", |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let at = DateTime::<Utc>::from_timestamp_millis(1_900_000_000_123).expect("valid");
        for link in [
            CachedLink::Missing,
            CachedLink::Disabled,
            CachedLink::Found {
                target_url: "https://example.com/a|b?c=d".into(),
                expires_at: Some(at),
                behaviour: Behaviour::default(),
            },
            CachedLink::Found {
                target_url: "https://example.com/".into(),
                expires_at: None,
                behaviour: Behaviour::default(),
            },
            CachedLink::Found {
                target_url: "https://example.com/x;y|z".into(),
                expires_at: Some(at),
                behaviour: Behaviour {
                    redirect_status: Some(308),
                    forward_query: true,
                    expired_url: Some("https://example.com/gone|é;".into()),
                    max_visits: Some(100),
                },
            },
            CachedLink::Found {
                target_url: "https://example.com/".into(),
                expires_at: None,
                behaviour: Behaviour {
                    forward_query: true,
                    ..Behaviour::default()
                },
            },
        ] {
            assert_eq!(decode(&encode(&link)).expect("decodes"), link);
        }
    }

    #[test]
    fn links_with_the_default_behaviour_keep_the_short_format() {
        let link = CachedLink::Found {
            target_url: "https://example.com/".into(),
            expires_at: None,
            behaviour: Behaviour::default(),
        };
        assert_eq!(encode(&link), "|https://example.com/");
    }

    #[test]
    fn garbage_is_reported_as_corrupt() {
        assert!(matches!(decode("no separator"), Err(CacheError::Corrupt)));
        assert!(matches!(
            decode("soon|https://x.example/"),
            Err(CacheError::Corrupt)
        ));
        // An expired_url length past the end of the value.
        assert!(matches!(
            decode(";;;;99|https://x.example/"),
            Err(CacheError::Corrupt)
        ));
    }

    #[test]
    fn soon_expiring_links_get_a_shorter_ttl() {
        let hour = Duration::from_secs(3600);
        let soon = Utc::now() + chrono::Duration::seconds(60);
        assert!(found_ttl(hour, Some(soon)) <= Duration::from_secs(60));
        assert_eq!(found_ttl(hour, None), hour);
        let past = Utc::now() - chrono::Duration::seconds(60);
        assert_eq!(found_ttl(hour, Some(past)), Duration::from_secs(1));
    }
}
