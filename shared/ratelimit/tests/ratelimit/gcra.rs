use std::time::Duration;

use kurz_ratelimit::{Decision, Limit, Limiter, Quota};
use kurz_telemetry::metrics::names;
use kurz_testkit::RedisServer;

use crate::helpers::{metrics, store};

#[tokio::test]
async fn two_instances_share_one_budget_and_remaining_counts_down() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis.url()), store(&redis.url()));
    let limiters = [
        Limiter::new(&a, Limit::ApiKey),
        Limiter::new(&b, Limit::ApiKey),
    ];
    let quota = Quota::per_minute(10);

    let mut decisions = Vec::new();
    for i in 0..30 {
        decisions.push(limiters[i % 2].check("42", quota).await);
    }

    let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
    assert_eq!(allowed.len(), 10, "{decisions:#?}");
    assert!(
        decisions[..10].iter().all(|d| d.allowed),
        "the burst comes first"
    );
    let remaining: Vec<u32> = allowed.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    for refused in decisions.iter().filter(|d| !d.allowed) {
        assert_eq!(refused.remaining, 0);
        let retry = refused.retry_after.expect("a refusal says when to retry");
        assert!(retry >= Duration::from_secs(1), "{refused:?}");
        assert!(
            retry <= Duration::from_secs(6),
            "one request costs 6 s: {refused:?}"
        );
        assert!(refused.reset > Duration::from_secs(50), "{refused:?}");
    }
    assert!(decisions.iter().all(|d| !d.fallback && d.limit == 10));
    assert!(
        decisions
            .iter()
            .all(|d| d.allowed == d.retry_after.is_none())
    );
    let limited = [("limit", "api_key"), ("result", "limited")];
    assert_eq!(metrics().sum(names::RATELIMIT_DECISIONS, &limited), 20.0);
}

#[tokio::test]
async fn subjects_and_limits_have_budgets_of_their_own() {
    let redis = RedisServer::start().await;
    let store = store(&redis.url());
    let per_key = Limiter::new(&store, Limit::ApiKey);
    let anonymous = Limiter::new(&store, Limit::Anonymous);
    let quota = Quota::per_minute(1);

    assert!(per_key.check("1", quota).await.allowed);
    assert!(!per_key.check("1", quota).await.allowed);
    assert!(per_key.check("2", quota).await.allowed, "another key");
    assert!(anonymous.check("1", quota).await.allowed, "another limit");
}

#[tokio::test]
async fn a_smaller_burst_spreads_the_same_rate() {
    let redis = RedisServer::start().await;
    let limiter = Limiter::new(&store(&redis.url()), Limit::Anonymous);
    let quota = Quota::per_minute(60).with_burst(3);

    let decisions = checks(&limiter, quota, 5).await;

    let allowed = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(allowed, 3, "{decisions:#?}");
    assert_eq!(decisions[0].remaining, 2);
    assert_eq!(decisions[3].retry_after, Some(Duration::from_secs(1)));
    // The policy still says 60 a minute.
    assert!(
        decisions[0]
            .headers()
            .contains(&("ratelimit-policy", "\"anonymous\";q=60;w=60".to_owned()))
    );
}

#[tokio::test]
async fn the_key_expires_once_the_quota_is_whole_again() {
    let redis = RedisServer::start().await;
    let limiter = Limiter::new(&store(&redis.url()), Limit::ApiKey);

    let first = limiter.check("7", Quota::per_minute(600)).await;

    assert_eq!(
        first.reset,
        Duration::from_millis(100),
        "one request costs 100 ms"
    );
    let mut conn = redis.connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("kurz:rl:{key:7}")
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!((1..=100).contains(&ttl), "{ttl} ms");
}

#[tokio::test]
async fn several_requests_are_taken_at_once_or_not_at_all() {
    let redis = RedisServer::start().await;
    let (a, b) = (store(&redis.url()), store(&redis.url()));
    let (first, second) = (
        Limiter::new(&a, Limit::ApiKey),
        Limiter::new(&b, Limit::ApiKey),
    );
    // One request a second, 60 at once.
    let quota = Quota::per_minute(60);

    let one = first.check("9", quota).await;
    let fifty = second.check_n("9", quota, 50).await;
    let ten = first.check_n("9", quota, 10).await;
    let nine = second.check_n("9", quota, 9).await;

    assert!(one.allowed && one.remaining == 59, "{one:?}");
    assert!(
        fifty.allowed && fifty.remaining == 9,
        "both instances count: {fifty:?}"
    );
    assert!(
        !ten.allowed && ten.remaining == 9,
        "10 do not fit in 9: {ten:?}"
    );
    assert_eq!(
        ten.retry_after,
        Some(Duration::from_secs(1)),
        "the tenth comes back within a second"
    );
    assert!(
        nine.allowed && nine.remaining == 0,
        "the refusal took nothing: {nine:?}"
    );
    assert!(
        !first.check_n("other", quota, 61).await.allowed,
        "more than the burst never fits"
    );
}

/// `n` checks of one subject, one after the other.
async fn checks(limiter: &Limiter, quota: Quota, n: usize) -> Vec<Decision> {
    let mut decisions = Vec::with_capacity(n);
    for _ in 0..n {
        decisions.push(limiter.check("s", quota).await);
    }
    decisions
}
