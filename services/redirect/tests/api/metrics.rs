use kurz_telemetry::metrics::names;
use kurz_testkit::metrics::scrape;
use kurz_testkit::{ShutdownMode, TestEnv, http_client};

use crate::helpers::{insert, spawn_redirect};

#[tokio::test]
async fn metrics_name_every_redirect_series_and_counters_move_with_traffic() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[("KURZ_BREAKER_FAILURES", "2")]).await;
    insert(&env, "metered", "https://example.com/metered", None).await;
    let client = http_client();
    let get = |path: &'static str| {
        let request = client.get(app.url(path));
        async move { request.send().await.expect("GET").status().as_u16() }
    };
    let base = app.url("");
    let base = base.trim_end_matches('/');

    // A first redirect misses both caches and asks PostgreSQL; the next ones hit memory.
    assert_eq!(get("/metered").await, 302);
    let before = scrape(base).await;
    for _ in 0..5 {
        assert_eq!(get("/metered").await, 302);
    }
    assert_eq!(get("/no-such-link").await, 404);
    let after = scrape(base).await;

    after.assert_has_all(&[
        names::HTTP_REQUESTS,
        names::HTTP_REQUEST_DURATION,
        names::CACHE_LOOKUPS,
        names::BREAKER_STATE,
        names::DB_POOL_CONNECTIONS,
        names::DB_POOL_MAX,
        names::DB_POOL_WAITING,
        names::DB_POOL_WAIT,
        names::REDIS_POOL_CONNECTIONS,
        names::REDIS_POOL_WAITING,
        names::CLICK_QUEUE_DEPTH,
        names::CLICK_EVENTS_SHIPPED,
        names::CLICK_EVENTS_DROPPED,
    ]);
    let redirects = [("route", "/{code}"), ("status", "302")];
    assert_eq!(
        after.sum(names::HTTP_REQUESTS, &redirects) - before.sum(names::HTTP_REQUESTS, &redirects),
        5.0
    );
    let latencies = "kurz_http_request_duration_seconds_count";
    assert_eq!(
        after.sum(latencies, &redirects) - before.sum(latencies, &redirects),
        5.0
    );
    let local_hits = [("tier", "local"), ("result", "hit")];
    assert_eq!(
        after.sum(names::CACHE_LOOKUPS, &local_hits)
            - before.sum(names::CACHE_LOOKUPS, &local_hits),
        5.0
    );
    let redis_misses = [("tier", "redis"), ("result", "miss")];
    assert!(
        after.sum(names::CACHE_LOOKUPS, &redis_misses) >= 2.0,
        "both unknown codes"
    );
    assert_eq!(after.sum(names::BREAKER_STATE, &[]), 0.0, "closed");

    // PostgreSQL gone: lookups fail until the breaker opens and refuses them.
    env.postgres.stop(ShutdownMode::Fast).await;
    for path in ["/gone-1", "/gone-2", "/gone-3", "/gone-4"] {
        assert_eq!(get(path).await, 503, "{path}");
    }
    let broken = scrape(base).await;
    assert_eq!(broken.sum(names::BREAKER_STATE, &[]), 2.0, "open");
    assert!(broken.sum(names::BREAKER_TRANSITIONS, &[("to", "open")]) >= 1.0);
    assert!(broken.sum(names::BREAKER_REJECTIONS, &[]) >= 1.0);
    assert!(
        broken.sum(names::HTTP_REQUESTS, &[("status", "503")]) >= 4.0,
        "{}",
        broken.0
    );
}
