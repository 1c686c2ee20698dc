//! The Redis side both kinds of limit share: one multiplexed connection, the per-call
//! budget, and the outage state that sends decisions to the in-process fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kurz_repository::CacheError;
use kurz_repository::cache::within_budget;
use kurz_repository::redis_conn::RedisConn;
use kurz_telemetry::metrics::names;
use metrics::Gauge;
use redis::{FromRedisValue, Script};

/// How long Redis is left alone after a failed call (see [`Store::with_retry_interval`]).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Subjects each limiter keeps in memory at most (see [`Store::with_local_capacity`]).
pub const DEFAULT_LOCAL_CAPACITY: u64 = 100_000;

/// Where rate limits are counted: Redis, shared by every instance, and this process's
/// memory while Redis is down or slow. Cheap to clone; every clone shares one outage state,
/// so a process logs and reports one outage however many limiters it has.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    budget: Duration,
    retry_interval: Duration,
    local_capacity: u64,
    outage: Arc<Outage>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("budget", &self.budget)
            .field("retry_interval", &self.retry_interval)
            .field("local_capacity", &self.local_capacity)
            .field("in_fallback", &self.in_fallback())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// `conn` is the process's shared multiplexed connection
    /// (`RedisCache::connection()`, one server or a cluster): a pool checkout would cost a
    /// round trip of its own. Every script touches one key (`KEYS[1]`), so on a cluster it
    /// runs on the node of that key's slot. `budget` bounds each call, as `KURZ_REDIS_COMMAND_TIMEOUT_MS` bounds cache calls;
    /// past it the decision is made in-process.
    pub fn new(conn: RedisConn, budget: Duration) -> Self {
        Self {
            conn,
            budget,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            local_capacity: DEFAULT_LOCAL_CAPACITY,
            outage: Arc::new(Outage::new()),
        }
    }

    /// After a failed call, Redis is skipped for this long (default 1 s) and decisions are
    /// made in-process at once, so a blackholed Redis costs one call the budget per
    /// interval rather than every request; then one call tries Redis again.
    #[must_use]
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The most subjects each limiter remembers in-process (default 100,000, a few MB),
    /// for the fallback and for the block list. Past it the least used are forgotten.
    #[must_use]
    pub fn with_local_capacity(mut self, capacity: u64) -> Self {
        self.local_capacity = capacity.max(1);
        self
    }

    /// Whether decisions are being made in-process (Redis failed within the last
    /// retry interval).
    pub fn in_fallback(&self) -> bool {
        self.outage.in_fallback.load(Ordering::Relaxed)
    }

    pub(crate) fn local_capacity(&self) -> u64 {
        self.local_capacity
    }

    /// Runs `script` on `key` with `args` within the budget. `None` means "decide
    /// in-process": Redis failed now, or failed recently and is being left alone.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> Option<T> {
        if !self.outage.should_try(self.retry_interval) {
            return None;
        }
        let mut conn = self.conn.clone();
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        let call = async {
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| CacheError::Unavailable(Box::new(e)))
        };
        match within_budget(self.budget, "EVALSHA", call).await {
            Ok(value) => {
                self.outage.succeeded();
                Some(value)
            }
            Err(e) => {
                self.outage.failed(&e, self.retry_interval);
                None
            }
        }
    }
}

/// Whether Redis is being skipped, and until when. Logged once per outage: a warning on
/// entering it, an info line on leaving.
#[derive(Debug)]
struct Outage {
    started: Instant,
    /// Milliseconds since `started` (plus one) until which Redis is skipped; 0 while Redis
    /// answers, so the healthy path is one load.
    skip_until: AtomicU64,
    in_fallback: AtomicBool,
    /// `kurz_ratelimit_fallback`. Incremented and decremented rather than set, so several
    /// stores in one process (tests run two "instances" in one) add up instead of fighting.
    gauge: Gauge,
}

impl Outage {
    fn new() -> Self {
        let gauge = metrics::gauge!(names::RATELIMIT_FALLBACK);
        // Makes the series exist (at 0) before the first outage.
        gauge.increment(0.0);
        Self {
            started: Instant::now(),
            skip_until: AtomicU64::new(0),
            in_fallback: AtomicBool::new(false),
            gauge,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// True while Redis is healthy; during an outage, true for one caller per interval
    /// (the probe), false for the others, which decide in-process without waiting.
    fn should_try(&self, interval: Duration) -> bool {
        let until = self.skip_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        if now < until {
            return false;
        }
        self.skip_until
            .compare_exchange(
                until,
                now.saturating_add(millis(interval)),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn succeeded(&self) {
        if self.skip_until.load(Ordering::Relaxed) != 0 {
            self.skip_until.store(0, Ordering::Release);
        }
        if self.in_fallback.load(Ordering::Relaxed)
            && self.in_fallback.swap(false, Ordering::AcqRel)
        {
            self.gauge.decrement(1.0);
            tracing::info!("rate limits: Redis answers again; counting there, shared");
        }
    }

    fn failed(&self, error: &CacheError, interval: Duration) {
        self.skip_until.store(
            self.now().saturating_add(millis(interval)),
            Ordering::Release,
        );
        if !self.in_fallback.swap(true, Ordering::AcqRel) {
            self.gauge.increment(1.0);
            tracing::warn!(
                error = ?error,
                "rate limits: Redis is unavailable or slow; counting in-process, each instance on its own"
            );
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
