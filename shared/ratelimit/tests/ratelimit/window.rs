use std::time::Duration;

use kurz_ratelimit::{Budget, Limit, WindowCounter};
use kurz_testkit::RedisServer;

use crate::helpers::store;

#[tokio::test]
async fn the_counter_blocks_past_its_budget_across_instances_and_peek_sees_it() {
    let redis = RedisServer::start().await;
    let counters = [
        WindowCounter::new(&store(&redis.url()), Limit::AuthFailures),
        WindowCounter::new(&store(&redis.url()), Limit::AuthFailures),
    ];
    // An instance that never counted this subject, as a third service would be.
    let bystander = WindowCounter::new(&store(&redis.url()), Limit::AuthFailures);
    let budget = Budget::per_minute(5);
    assert_eq!(bystander.peek("203.0.113.9", budget).await, None);

    let mut verdicts = Vec::new();
    for i in 0..8 {
        verdicts.push(counters[i % 2].record("203.0.113.9", budget).await);
    }

    let counts: Vec<u64> = verdicts.iter().map(|v| v.count).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(
        verdicts[..5]
            .iter()
            .all(|v| !v.blocked && v.retry_after.is_none())
    );
    for blocked in &verdicts[5..] {
        assert!(blocked.blocked, "{blocked:?}");
        let retry = blocked.retry_after.expect("when the window ends");
        assert!((1..=60).contains(&retry.as_secs()), "{blocked:?}");
        assert!(!blocked.fallback);
    }
    assert!(!bystander.anyone_blocked_here());
    let seen = bystander.peek("203.0.113.9", budget).await;
    assert!(
        seen.is_some_and(|left| left <= Duration::from_secs(60)),
        "{seen:?}"
    );
    assert!(
        bystander.blocked_here("203.0.113.9").is_some(),
        "peek remembers"
    );
    assert!(
        counters[0].blocked_here("203.0.113.9").is_some(),
        "record remembers"
    );
    assert_eq!(
        bystander.peek("198.51.100.1", budget).await,
        None,
        "others are free"
    );
    assert_eq!(bystander.blocked_here("198.51.100.1"), None);
}

#[tokio::test]
async fn the_window_starts_at_the_first_event_and_does_not_slide() {
    let redis = RedisServer::start().await;
    let counter = WindowCounter::new(&store(&redis.url()), Limit::Scan);
    let budget = Budget::new(100, Duration::from_secs(30));

    let first = counter.record("a", budget).await;
    let mut conn = redis.connection().await;
    let ttl = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg("kurz:rl:{scan:a}")
                .query_async::<i64>(&mut conn)
                .await
                .expect("PTTL")
        }
    };
    let after_first = ttl(&mut conn).await;
    counter.record("a", budget).await;
    let after_second = ttl(&mut conn).await;

    assert!(first.reset <= Duration::from_secs(30) && first.reset > Duration::from_secs(25));
    assert!((1..=30_000).contains(&after_first), "{after_first}");
    assert!(
        after_second <= after_first,
        "{after_first} then {after_second}"
    );
}

#[tokio::test]
async fn a_zero_budget_blocks_at_the_first_event() {
    let redis = RedisServer::start().await;
    let counter = WindowCounter::new(&store(&redis.url()), Limit::Scan);

    let verdict = counter.record("a", Budget::per_minute(0)).await;

    assert!(verdict.blocked);
}
