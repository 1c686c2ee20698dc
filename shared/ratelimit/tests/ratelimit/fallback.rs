use kurz_ratelimit::{Budget, Limit, Limiter, Quota, WindowCounter};
use kurz_telemetry::metrics::names;
use kurz_testkit::{Fault, FaultProxy, RedisServer, eventually};

use crate::helpers::{metrics, store};

#[tokio::test]
async fn with_redis_stopped_decisions_come_from_memory_at_the_same_rate_then_from_redis_again() {
    let redis = RedisServer::start().await;
    let store = store(&redis.url());
    let limiter = Limiter::new(&store, Limit::Anonymous);
    let quota = Quota::per_minute(5);
    assert!(!limiter.check("warm-up", quota).await.fallback);
    assert_eq!(metrics().sum(names::RATELIMIT_FALLBACK, &[]), 0.0);

    redis.stop().await;
    let mut decisions = Vec::new();
    for _ in 0..8 {
        decisions.push(limiter.check("203.0.113.9", quota).await);
    }

    assert!(decisions.iter().all(|d| d.fallback), "{decisions:#?}");
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 5);
    assert!(
        decisions[5..]
            .iter()
            .all(|d| !d.allowed && d.retry_after.is_some())
    );
    assert_eq!(decisions[0].remaining, 4);
    assert!(store.in_fallback());
    let during = metrics();
    assert_eq!(
        during.sum(names::RATELIMIT_FALLBACK, &[]),
        1.0,
        "{}",
        during.0
    );
    let fallback_decisions = [("limit", "anonymous")];
    assert_eq!(
        during.sum(names::RATELIMIT_FALLBACK_DECISIONS, &fallback_decisions),
        8.0
    );

    redis.restart().await;
    eventually("decisions come from Redis again", || async {
        !limiter.check("after", quota).await.fallback
    })
    .await;
    assert!(!store.in_fallback());
    assert_eq!(metrics().sum(names::RATELIMIT_FALLBACK, &[]), 0.0);
}

#[tokio::test]
async fn a_blackholed_redis_costs_one_call_its_budget_then_decisions_are_made_at_once() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let store = store(&format!("redis://127.0.0.1:{}", proxy.port()));
    let limiter = Limiter::new(&store, Limit::ApiKey);
    let quota = Quota::per_minute(3);
    assert!(!limiter.check("warm-up", quota).await.fallback);

    proxy.set(Fault::Blackhole);
    let first = limiter.check("9", quota).await;
    let mut rest = Vec::new();
    for _ in 0..5 {
        rest.push(limiter.check("9", quota).await);
    }

    assert!(first.fallback && first.allowed, "{first:?}");
    assert!(rest.iter().all(|d| d.fallback));
    assert_eq!(
        rest.iter().filter(|d| d.allowed).count(),
        2,
        "3 a minute in all"
    );
    assert_eq!(metrics().sum(names::RATELIMIT_FALLBACK, &[]), 1.0);

    proxy.restore();
    eventually("decisions come from Redis again", || async {
        !limiter.check("after", quota).await.fallback
    })
    .await;
    assert_eq!(metrics().sum(names::RATELIMIT_FALLBACK, &[]), 0.0);
}

#[tokio::test]
async fn with_redis_stopped_the_window_counter_counts_and_blocks_in_memory() {
    let redis = RedisServer::start().await;
    let store = store(&redis.url());
    let counter = WindowCounter::new(&store, Limit::Scan);
    let budget = Budget::per_minute(3);
    redis.stop().await;

    let mut verdicts = Vec::new();
    for _ in 0..5 {
        verdicts.push(counter.record("203.0.113.9", budget).await);
    }

    assert!(verdicts.iter().all(|v| v.fallback));
    let blocked: Vec<bool> = verdicts.iter().map(|v| v.blocked).collect();
    assert_eq!(blocked, [false, false, false, true, true]);
    assert!(counter.peek("203.0.113.9", budget).await.is_some());
    assert_eq!(counter.peek("198.51.100.1", budget).await, None);
}

#[tokio::test]
async fn two_stores_in_fallback_report_one_each() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis.url()), store(&redis.url()));
    let limiters = [Limiter::new(&a, Limit::Scan), Limiter::new(&b, Limit::Scan)];
    redis.stop().await;

    for limiter in &limiters {
        limiter.check("x", Quota::per_minute(1)).await;
    }

    assert_eq!(metrics().sum(names::RATELIMIT_FALLBACK, &[]), 2.0);
}
