use kurz_testkit::{ShutdownMode, TestEnv, http_client};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::Value;

use crate::helpers::{insert, spawn_redirect};

#[tokio::test]
async fn healthz_says_alive() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[]).await;

    let response = http_client()
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_ready_then_degraded_without_redis_then_unavailable_without_postgres() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[]).await;
    let client = http_client();
    let readyz = || async {
        client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("request")
    };

    let ready = readyz().await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.expect("json")["status"],
        "ready"
    );

    env.redis.stop().await;
    let degraded = readyz().await;
    assert_eq!(degraded.status(), StatusCode::OK);
    let body: Value = degraded.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["redis"], "down");

    env.postgres.stop(ShutdownMode::Fast).await;
    let down = readyz().await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        down.json::<Value>().await.expect("json")["postgres"],
        "down"
    );
}

#[tokio::test]
async fn readyz_stays_ready_degraded_without_postgres_while_redis_serves_cached_links() {
    let env = TestEnv::start().await;
    insert(&env, "cachedrd", "https://example.com/ready", None).await;
    let app = spawn_redirect(&env, &[]).await;
    let client = http_client();
    // Cached in Redis by this first answer.
    let first = client
        .get(app.url("/cachedrd"))
        .send()
        .await
        .expect("request");
    assert_eq!(first.status(), StatusCode::FOUND);

    env.postgres.stop(ShutdownMode::Fast).await;
    let readyz = client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("request");
    // A load balancer must keep sending it traffic: it still serves the cached link.
    assert_eq!(readyz.status(), StatusCode::OK);
    let body: Value = readyz.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["postgres"], "down");
    assert_eq!(body["redis"], "up");
    let cached = client
        .get(app.url("/cachedrd"))
        .send()
        .await
        .expect("request");
    assert_eq!(cached.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn with_redis_down_links_are_served_from_postgres() {
    let env = TestEnv::start().await;
    insert(&env, "noredis", "https://example.com/r", None).await;
    let app = spawn_redirect(&env, &[]).await;
    env.redis.stop().await;

    let response = http_client()
        .get(app.url("/noredis"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[LOCATION], "https://example.com/r");
}
