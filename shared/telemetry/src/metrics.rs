//! Prometheus metrics: the one process-wide recorder, and the name of every metric Kurz exports.
//!
//! Metrics are recorded with the `metrics` facade (`metrics::counter!(names::X)`), anywhere,
//! and rendered by [`render`] for a service's `/metrics`. There is no `service` label: the
//! scraper's `job` label says which service a series came from.
//!
//! Every name is a constant here and listed in [`ALL`], which the dashboard test checks the
//! Grafana queries against.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The metric names. Counters end in `_total`, as Prometheus expects.
pub mod names {
    /// Counter; labels `route`, `method`, `status`.
    pub const HTTP_REQUESTS: &str = "kurz_http_requests_total";
    /// Histogram (seconds); labels `route`, `method`, `status`.
    pub const HTTP_REQUEST_DURATION: &str = "kurz_http_request_duration_seconds";
    /// Counter; labels `tier` (`local`, `redis`), `result` (`hit`, `miss`, `negative`).
    pub const CACHE_LOOKUPS: &str = "kurz_cache_lookups_total";
    /// Gauge: 0 closed, 1 half-open, 2 open.
    pub const BREAKER_STATE: &str = "kurz_breaker_state";
    /// Counter; label `to` (`closed`, `half_open`, `open`).
    pub const BREAKER_TRANSITIONS: &str = "kurz_breaker_transitions_total";
    /// Counter: calls refused without trying PostgreSQL.
    pub const BREAKER_REJECTIONS: &str = "kurz_breaker_rejections_total";
    /// Gauge: unused keys in PostgreSQL (PostgreSQL's live-row estimate, no scan).
    pub const KEYPOOL_DEPTH: &str = "kurz_keypool_depth";
    /// Counter: keys claimed from the pool.
    pub const KEYS_CLAIMED: &str = "kurz_keys_claimed_total";
    /// Counter: keys added to the pool.
    pub const KEYS_REFILLED: &str = "kurz_keys_refilled_total";
    /// Histogram (seconds): one refill's bulk insert.
    pub const REFILL_DURATION: &str = "kurz_refill_duration_seconds";
    /// Gauge: keys claimed by this create instance and not yet used.
    pub const KEY_BUFFER_DEPTH: &str = "kurz_key_buffer_depth";
    /// Gauge; label `state` (`in_use`, `idle`).
    pub const DB_POOL_CONNECTIONS: &str = "kurz_db_pool_connections";
    /// Gauge: the pool's maximum size.
    pub const DB_POOL_MAX: &str = "kurz_db_pool_max";
    /// Gauge: callers waiting for a connection.
    pub const DB_POOL_WAITING: &str = "kurz_db_pool_waiting";
    /// Histogram (seconds): time to get a pooled connection.
    pub const DB_POOL_WAIT: &str = "kurz_db_pool_wait_seconds";
    /// Counter; label `kind` (`pool`, `statement`, `deadline`).
    pub const DB_TIMEOUTS: &str = "kurz_db_timeouts_total";
    /// Gauge; label `state` (`in_use`, `idle`).
    pub const REDIS_POOL_CONNECTIONS: &str = "kurz_redis_pool_connections";
    /// Gauge: callers waiting for a pooled Redis connection.
    pub const REDIS_POOL_WAITING: &str = "kurz_redis_pool_waiting";
    /// Histogram (seconds): time to get a pooled Redis connection.
    pub const REDIS_POOL_WAIT: &str = "kurz_redis_pool_wait_seconds";
    /// Counter: Redis calls that ran out of their time budget.
    pub const REDIS_TIMEOUTS: &str = "kurz_redis_timeouts_total";
    /// Histogram: links per group-commit insert.
    pub const CREATE_BATCH_SIZE: &str = "kurz_create_batch_size";
    /// Counter; labels `limit` (`api_key`, `anonymous`, `auth_failures`, `scan`), `result`
    /// (`allowed`, `limited`).
    pub const RATELIMIT_DECISIONS: &str = "kurz_ratelimit_decisions_total";
    /// Gauge: 1 while this process's rate limits count in-process because Redis is down or
    /// slow, else 0.
    pub const RATELIMIT_FALLBACK: &str = "kurz_ratelimit_fallback";
    /// Counter; label `limit`: decisions made in-process instead of in Redis.
    pub const RATELIMIT_FALLBACK_DECISIONS: &str = "kurz_ratelimit_fallback_decisions_total";
    /// Gauge: clicks in this redirect instance's queue, not yet sent to Redis.
    pub const CLICK_QUEUE_DEPTH: &str = "kurz_click_queue_depth";
    /// Counter; label `reason` (`queue_full`, `unconfirmed`, `rejected`): clicks the redirect
    /// service dropped instead of sending to Redis.
    pub const CLICK_EVENTS_DROPPED: &str = "kurz_click_events_dropped_total";
    /// Counter: clicks the redirect service sent to a Redis stream.
    pub const CLICK_EVENTS_SHIPPED: &str = "kurz_click_events_shipped_total";
    /// Histogram (seconds): sending one batch of clicks to Redis, for batches that arrived.
    pub const CLICK_BATCH_DURATION: &str = "kurz_click_batch_duration_seconds";
    /// Counter; label `outcome` (`applied`, `duplicate`, `invalid`, `unknown_link`,
    /// `trimmed`): what the analytics worker did with the clicks it read. `invalid` and
    /// `trimmed` count stream entries, whose clicks cannot be known; the others count clicks.
    pub const ANALYTICS_EVENTS: &str = "kurz_analytics_events_total";
    /// Histogram (seconds): one batch's rollup transaction, commit included.
    pub const ANALYTICS_BATCH_COMMIT: &str = "kurz_analytics_batch_commit_seconds";
    /// Gauge; label `shard`: entries not yet delivered to the consumer group.
    pub const ANALYTICS_STREAM_LAG: &str = "kurz_analytics_stream_lag";
    /// Gauge; label `shard`: entries delivered and not yet acknowledged.
    pub const ANALYTICS_PENDING: &str = "kurz_analytics_pending";
    /// Counter: entries claimed from other consumers (`XAUTOCLAIM`) or read back from this
    /// one's own pending list.
    pub const ANALYTICS_CLAIMED: &str = "kurz_analytics_claimed_total";
    /// Counter; label `stage` (`read`, `commit`, `ack`, `housekeeping`): failed steps,
    /// retried after a backoff.
    pub const ANALYTICS_RETRIES: &str = "kurz_analytics_retries_total";
    /// Counter: batches whose ranges overlapped entries another worker had applied, redone
    /// entry by entry.
    pub const ANALYTICS_OVERLAPS: &str = "kurz_analytics_overlaps_total";
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, unit and help text.
pub const ALL: &[(&str, Kind, Option<Unit>, &str)] = {
    use Kind::{Counter, Gauge, Histogram};
    use names::*;
    &[
        (
            HTTP_REQUESTS,
            Counter,
            None,
            "HTTP requests answered, by route, method and status.",
        ),
        (
            HTTP_REQUEST_DURATION,
            Histogram,
            Some(Unit::Seconds),
            "HTTP request latency, by route, method and status.",
        ),
        (
            CACHE_LOOKUPS,
            Counter,
            None,
            "Cache lookups by tier (local, redis) and result (hit, miss, negative).",
        ),
        (
            BREAKER_STATE,
            Gauge,
            None,
            "PostgreSQL circuit breaker: 0 closed, 1 half-open, 2 open.",
        ),
        (
            BREAKER_TRANSITIONS,
            Counter,
            None,
            "Circuit breaker state changes, by the state entered.",
        ),
        (
            BREAKER_REJECTIONS,
            Counter,
            None,
            "PostgreSQL calls refused by the open circuit breaker.",
        ),
        (
            KEYPOOL_DEPTH,
            Gauge,
            None,
            "Unused keys in the PostgreSQL key pool (estimate).",
        ),
        (KEYS_CLAIMED, Counter, None, "Keys claimed from the pool."),
        (
            KEYS_REFILLED,
            Counter,
            None,
            "Keys added to the pool by refills.",
        ),
        (
            REFILL_DURATION,
            Histogram,
            Some(Unit::Seconds),
            "Duration of one key-pool refill.",
        ),
        (
            KEY_BUFFER_DEPTH,
            Gauge,
            None,
            "Claimed keys this create instance holds unused.",
        ),
        (
            DB_POOL_CONNECTIONS,
            Gauge,
            None,
            "PostgreSQL pool connections, by state (in_use, idle).",
        ),
        (DB_POOL_MAX, Gauge, None, "PostgreSQL pool maximum size."),
        (
            DB_POOL_WAITING,
            Gauge,
            None,
            "Callers waiting for a PostgreSQL connection.",
        ),
        (
            DB_POOL_WAIT,
            Histogram,
            Some(Unit::Seconds),
            "Time to get a PostgreSQL connection from the pool.",
        ),
        (
            DB_TIMEOUTS,
            Counter,
            None,
            "PostgreSQL timeouts, by kind (pool, statement, deadline).",
        ),
        (
            REDIS_POOL_CONNECTIONS,
            Gauge,
            None,
            "Redis pool connections, by state (in_use, idle).",
        ),
        (
            REDIS_POOL_WAITING,
            Gauge,
            None,
            "Callers waiting for a pooled Redis connection.",
        ),
        (
            REDIS_POOL_WAIT,
            Histogram,
            Some(Unit::Seconds),
            "Time to get a pooled Redis connection.",
        ),
        (
            REDIS_TIMEOUTS,
            Counter,
            None,
            "Redis calls that exceeded their time budget.",
        ),
        (
            CREATE_BATCH_SIZE,
            Histogram,
            None,
            "Links per group-commit insert.",
        ),
        (
            RATELIMIT_DECISIONS,
            Counter,
            None,
            "Rate-limit decisions, by limit and result (allowed, limited).",
        ),
        (
            RATELIMIT_FALLBACK,
            Gauge,
            None,
            "1 while rate limits are counted in-process (Redis down or slow), else 0.",
        ),
        (
            RATELIMIT_FALLBACK_DECISIONS,
            Counter,
            None,
            "Rate-limit decisions made in-process instead of in Redis, by limit.",
        ),
        (
            CLICK_QUEUE_DEPTH,
            Gauge,
            None,
            "Clicks queued in this redirect instance, not yet sent to Redis.",
        ),
        (
            CLICK_EVENTS_DROPPED,
            Counter,
            None,
            "Clicks dropped instead of sent to Redis, by reason (queue_full, unconfirmed, rejected).",
        ),
        (
            CLICK_EVENTS_SHIPPED,
            Counter,
            None,
            "Clicks sent to the Redis click streams.",
        ),
        (
            CLICK_BATCH_DURATION,
            Histogram,
            Some(Unit::Seconds),
            "Time to send one batch of clicks to Redis (batches that arrived).",
        ),
        (
            ANALYTICS_EVENTS,
            Counter,
            None,
            "Clicks handled by the analytics worker, by outcome (invalid and trimmed: stream entries, whose clicks are unknown).",
        ),
        (
            ANALYTICS_BATCH_COMMIT,
            Histogram,
            Some(Unit::Seconds),
            "Duration of one analytics batch transaction, commit included.",
        ),
        (
            ANALYTICS_STREAM_LAG,
            Gauge,
            None,
            "Click stream entries not yet delivered to the analytics workers, by shard.",
        ),
        (
            ANALYTICS_PENDING,
            Gauge,
            None,
            "Click stream entries delivered and not yet acknowledged, by shard.",
        ),
        (
            ANALYTICS_CLAIMED,
            Counter,
            None,
            "Click stream entries that came back: claimed, or pending from before a restart.",
        ),
        (
            ANALYTICS_RETRIES,
            Counter,
            None,
            "Failed analytics worker steps retried after a backoff, by stage.",
        ),
        (
            ANALYTICS_OVERLAPS,
            Counter,
            None,
            "Analytics batches redone entry by entry after overlapping applied entries.",
        ),
    ]
};

/// Latency buckets, seconds: sub-millisecond resolution where the redirect path lives, up to
/// the request deadlines.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Rows per group commit: the batcher's sizes are powers of two up to its cap.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle. Metrics recorded
/// before this call are lost, so binaries call it (through `init`) before building anything;
/// tests that run several services in one process share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::CREATE_BATCH_SIZE.to_owned()),
                    BATCH_BUCKETS,
                )
            })
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Fails only if another recorder is installed (a test's own): then ours
                // renders an empty page rather than taking the process down.
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("another metrics recorder is installed; /metrics stays empty");
                }
                describe();
                handle
            }
            Err(e) => unreachable!("constant bucket lists are valid: {e}"),
        }
    })
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    handle().render()
}

fn describe() {
    for &(name, kind, unit, help) in ALL {
        match (kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// The names of [`ALL`], for checks.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|&(name, ..)| name)
}
