use kurz_telemetry::metrics::names;
use kurz_testkit::metrics::scrape;
use serde_json::json;

use crate::helpers::Stack;

#[tokio::test]
async fn metrics_name_every_create_series_and_counters_move_with_traffic() {
    let stack = Stack::start(1, 500).await;
    let base = stack.create().url("");
    let base = base.trim_end_matches('/');
    let first = stack
        .post(&json!({ "url": "https://example.com/m/0" }))
        .await;
    assert_eq!(first.status(), 201);
    let before = scrape(base).await;

    for n in 1..=4 {
        let response = stack
            .post(&json!({ "url": format!("https://example.com/m/{n}") }))
            .await;
        assert_eq!(response.status(), 201);
    }
    let refused = stack.post(&json!({ "url": "not a url" })).await;
    assert_eq!(refused.status(), 422);
    // The readiness probe pings Redis through the pool (pool-key creates do not use it).
    let ready = stack
        .client
        .get(stack.create().url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);
    let after = scrape(base).await;

    after.assert_has_all(&[
        names::HTTP_REQUESTS,
        names::HTTP_REQUEST_DURATION,
        names::KEY_BUFFER_DEPTH,
        names::CREATE_BATCH_SIZE,
        names::BREAKER_STATE,
        names::DB_POOL_CONNECTIONS,
        names::DB_POOL_MAX,
        names::DB_POOL_WAITING,
        names::DB_POOL_WAIT,
        names::REDIS_POOL_CONNECTIONS,
        names::REDIS_POOL_WAITING,
        names::REDIS_POOL_WAIT,
    ]);
    let created = [
        ("route", "/api/v1/links"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(
        after.sum(names::HTTP_REQUESTS, &created) - before.sum(names::HTTP_REQUESTS, &created),
        4.0
    );
    let invalid = [("route", "/api/v1/links"), ("status", "422")];
    assert_eq!(
        after.sum(names::HTTP_REQUESTS, &invalid) - before.sum(names::HTTP_REQUESTS, &invalid),
        1.0
    );
    // Each create is one row of some group commit.
    let rows = "kurz_create_batch_size_sum";
    assert_eq!(after.sum(rows, &[]) - before.sum(rows, &[]), 4.0);
    // The buffer holds what the claims brought minus the five keys the creates used.
    assert_eq!(
        after.sum(names::KEY_BUFFER_DEPTH, &[]),
        after.sum(names::KEYS_CLAIMED, &[]) - 5.0,
        "{}",
        after.0
    );
}
