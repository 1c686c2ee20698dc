//! The analytics worker against real PostgreSQL and Redis. Events are arranged by adding
//! stream entries as the redirect service writes them (`clicks::entry_fields`).

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncCommands};
use kurz_analytics::{Outcome, Settings, Worker};
use kurz_repository::clicks::{ClickEvent, ClickSource, GROUP, entry_fields, stream_key};
use kurz_repository::{Behaviour, LinkRepository, NewLink};
use kurz_settings::Source;
use kurz_testkit::TestEnv;

mod end_to_end;
mod exactly_once;
mod faults;
mod geoip;
mod rollups;

/// Shards in tests: two are enough to show that each has its own ranges and groups.
pub const SHARDS: u16 = 2;

pub const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1";
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// The worker's variables in tests: two shards, short blocking reads (a drained stream
/// answers in 50 ms), and claims only where a test asks for them.
pub fn source(env: &TestEnv, consumer: &str) -> Source {
    env.source()
        .with("KURZ_CLICK_STREAMS", SHARDS.to_string())
        .with("KURZ_ANALYTICS_CONSUMER", consumer)
        .with("KURZ_ANALYTICS_BLOCK_MS", "50")
}

pub async fn worker(env: &TestEnv, consumer: &str) -> Worker {
    worker_from(source(env, consumer)).await
}

pub async fn worker_from(source: Source) -> Worker {
    let settings = Settings::from_source(&source).expect("valid settings");
    Worker::build(&settings).await.expect("the worker starts")
}

/// A human's click on `code` now, from Chrome on Windows, without referrer, IP or visitor.
pub fn click(code: &str) -> ClickEvent {
    ClickEvent {
        code: code.to_owned(),
        at: Utc::now(),
        referrer: None,
        user_agent: Some(CHROME_WINDOWS.to_owned()),
        ip_prefix: None,
        visitor: None,
        source: ClickSource::Link,
    }
}

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("a valid time")
}

/// Stores a link under `code` and returns its id.
pub async fn link(env: &TestEnv, code: &str, owner_id: Option<i64>) -> i64 {
    let new = NewLink {
        target_url: "https://example.com/".to_owned(),
        expires_at: None,
        owner_id,
        behaviour: Behaviour::default(),
    };
    env.repository()
        .insert_with_alias(code, &new)
        .await
        .expect("the link is stored");
    query_one(env, "SELECT id FROM links WHERE code = $1", &[&code]).await
}

/// Adds `event` to shard `shard`'s stream, as an entry of its own.
pub async fn add(env: &TestEnv, shard: u16, event: &ClickEvent) -> String {
    add_batch(env, shard, std::slice::from_ref(event)).await
}

/// Adds `events` to shard `shard`'s stream as one entry, as the redirect service does.
pub async fn add_batch(env: &TestEnv, shard: u16, events: &[ClickEvent]) -> String {
    add_fields(env, shard, &entry_fields(events)).await
}

pub async fn add_fields(env: &TestEnv, shard: u16, fields: &[(&str, Vec<u8>)]) -> String {
    let mut conn = env.redis_conn().await;
    conn.xadd(stream_key(shard), "*", fields)
        .await
        .expect("XADD")
}

/// Entries of shard `shard` delivered and not acknowledged.
pub async fn pending(env: &TestEnv, shard: u16) -> usize {
    let mut conn = env.redis_conn().await;
    let reply: redis::streams::StreamPendingReply = conn
        .xpending(stream_key(shard), GROUP)
        .await
        .expect("XPENDING");
    reply.count()
}

pub async fn pending_everywhere(env: &TestEnv) -> usize {
    let mut total = 0;
    for shard in 0..SHARDS {
        total += pending(env, shard).await;
    }
    total
}

/// Steps until a step finds nothing to do; the sum of what they did.
pub async fn drain(worker: &mut Worker) -> Outcome {
    let mut total = Outcome::default();
    for _ in 0..100 {
        let step = worker.process_once().await.expect("a step");
        let idle = step.read == 0 && step.came_back == 0;
        total.read += step.read;
        total.came_back += step.came_back;
        total.applied += step.applied;
        total.duplicate += step.duplicate;
        total.invalid += step.invalid;
        total.unknown_link += step.unknown_link;
        total.trimmed += step.trimmed;
        if idle {
            return total;
        }
    }
    panic!("the streams never drained");
}

/// Steps until one succeeds, for a worker whose database just came back (its breaker may
/// stay open a moment). Bounded, so a worker that never recovers fails the test.
pub async fn until_committed(worker: &mut Worker) -> Outcome {
    for _ in 0..400 {
        if let Ok(outcome) = worker.process_once().await {
            return outcome;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the worker never recovered");
}

pub async fn query_one<T>(
    env: &TestEnv,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    env.sql()
        .await
        .query_one(sql, params)
        .await
        .expect("query")
        .get(0)
}

/// `links.clicks` of a link.
pub async fn clicks(env: &TestEnv, link_id: i64) -> i64 {
    query_one(env, "SELECT clicks FROM links WHERE id = $1", &[&link_id]).await
}

/// One `click_hourly` row: hour, humans, bots, unique humans, unique bots.
pub type Hour = (DateTime<Utc>, i64, i64, i64, i64);

pub async fn hourly(env: &TestEnv, link_id: i64) -> Vec<Hour> {
    env.sql()
        .await
        .query(
            "SELECT hour, humans, bots, unique_humans, unique_bots FROM click_hourly \
             WHERE link_id = $1 ORDER BY hour",
            &[&link_id],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// One dimension's values of a link, over all days: value, humans, bots.
pub async fn daily(env: &TestEnv, link_id: i64, dimension: &str) -> Vec<(String, i64, i64)> {
    env.sql()
        .await
        .query(
            "SELECT value, sum(humans)::int8, sum(bots)::int8 FROM click_daily \
             WHERE link_id = $1 AND dimension = $2 GROUP BY value ORDER BY value",
            &[&link_id, &dimension],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Every count of a link, to compare before and after.
pub async fn snapshot(env: &TestEnv, link_id: i64) -> (i64, Vec<Hour>, Vec<(String, i64, i64)>) {
    let mut all = Vec::new();
    for dimension in ["referrer", "country", "browser", "os", "device"] {
        all.extend(daily(env, link_id, dimension).await);
    }
    (clicks(env, link_id).await, hourly(env, link_id).await, all)
}

pub fn values(rows: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    rows.iter()
        .map(|(v, h, b)| ((*v).to_owned(), *h, *b))
        .collect()
}
