//! The redirect's in-process cache: single-flight loads and cross-instance invalidation.

use std::time::Duration;

use deadpool_redis::redis;
use kurz_testkit::{RunningApp, ShutdownMode, http_client};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::Value;

use crate::helpers::{Stack, eventually, spawn_redirect_with, within};

/// Long enough that only an invalidation, never the TTL, can explain a change in a test.
pub(crate) const LONG_LOCAL_TTL: [(&str, &str); 1] = [("KURZ_LOCAL_CACHE_TTL_MS", "600000")];

/// The status and `Location` of `GET /{code}` on `app`.
pub(crate) async fn location(
    client: &reqwest::Client,
    app: &RunningApp,
    code: &str,
) -> (StatusCode, Option<String>) {
    let response = client
        .get(app.url(&format!("/{code}")))
        .send()
        .await
        .expect("answered");
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().expect("ascii").to_owned());
    (response.status(), location)
}

#[tokio::test]
async fn a_delete_reaches_the_in_process_caches_of_every_redirect_instance() {
    let stack = Stack::start(1, 100).await;
    let first = spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await;
    let second = spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await;
    let created: Value = stack.create_link("https://example.com/both").await;
    let code = created["code"].as_str().expect("code");
    let client = http_client();
    for app in [&first, &second] {
        assert_eq!(location(&client, app, code).await.0, StatusCode::FOUND);
    }
    // Both now answer from memory: with Redis emptied and PostgreSQL stopped they still do.
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");
    stack.env.postgres.stop(ShutdownMode::Fast).await;
    for app in [&first, &second] {
        assert_eq!(
            location(&client, app, code).await.0,
            StatusCode::FOUND,
            "served from memory"
        );
    }
    stack.env.postgres.restart().await;

    let deleted = stack
        .client
        .delete(stack.create().url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("delete");

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // Within a second, not the local TTL (ten minutes here): an in-process cache that only
    // expires keeps a deleted link resolving for its whole TTL (dub #4267: 5 s).
    for app in [&first, &second] {
        within(
            Duration::from_secs(1),
            "the delete reached this instance",
            || async { location(&client, app, code).await.0 == StatusCode::NOT_FOUND },
        )
        .await;
    }
}

#[tokio::test]
async fn after_a_pubsub_disconnect_the_in_process_cache_is_flushed() {
    let stack = Stack::start(1, 100).await;
    let redirect = spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await;
    let created: Value = stack.create_link("https://example.com/old").await;
    let code = created["code"].as_str().expect("code");
    let client = http_client();
    assert_eq!(
        location(&client, &redirect, code).await.1.as_deref(),
        Some("https://example.com/old")
    );
    // Change the link behind every cache's back: no invalidation is published.
    stack
        .env
        .sql()
        .await
        .execute(
            "UPDATE links SET target_url = 'https://example.com/new' WHERE code = $1",
            &[&code],
        )
        .await
        .expect("update");
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");
    assert_eq!(
        location(&client, &redirect, code).await.1.as_deref(),
        Some("https://example.com/old"),
        "the stale answer is still in memory"
    );

    // Cut every subscriber: messages sent now could be lost, so the resubscribed instance
    // must forget everything it holds.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the redirect instance was subscribed");

    eventually(
        "the in-process cache was flushed after resubscribing",
        || async {
            location(&client, &redirect, code).await.1.as_deref() == Some("https://example.com/new")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_an_uncached_code_cost_one_postgresql_lookup_per_instance() {
    let stack = Stack::start(1, 100).await;
    let sql = stack.env.sql().await;
    sql.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .expect("extension");
    let created: Value = stack.create_link("https://example.com/hot").await;
    let code = created["code"].as_str().expect("code").to_owned();
    let instances = [
        spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await,
        spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await,
    ];
    // Without Redis every instance must ask PostgreSQL itself; the question is how often.
    stack.env.redis.stop().await;
    sql.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .expect("reset");
    let client = http_client();

    let requests = (0..200).map(|i| {
        let (client, app, code) = (&client, &instances[i % 2], &code);
        async move { location(client, app, code).await }
    });
    let answers = futures_util::future::join_all(requests).await;

    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == StatusCode::FOUND)
    );
    let lookups: i64 = sql
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements \
             WHERE query LIKE '%FROM links WHERE code = $1 AND deleted_at IS NULL%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        lookups, 2,
        "one lookup per instance for 200 concurrent requests"
    );
}

#[tokio::test]
async fn a_disabled_link_is_410_on_every_redirect_instance_within_a_second_until_enabled() {
    let stack = Stack::start(1, 100).await;
    let first = spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await;
    let second = spawn_redirect_with(&stack.env, &LONG_LOCAL_TTL).await;
    let created: Value = stack.create_link("https://example.com/abuse").await;
    let code = created["code"].as_str().expect("code");
    let client = http_client();
    // Both instances hold the link in memory, for ten minutes.
    for app in [&first, &second] {
        assert_eq!(location(&client, app, code).await.0, StatusCode::FOUND);
    }
    let admin = |action: &str| {
        stack
            .client
            .post(
                stack
                    .create()
                    .url(&format!("/api/v1/links/{code}/{action}")),
            )
            .send()
    };

    let disabled = admin("disable").await.expect("disable");
    let at = std::time::Instant::now();

    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(
        disabled.json::<Value>().await.expect("json")["disabled"],
        true
    );
    for app in [&first, &second] {
        eventually("the link answers 410", || async {
            location(&client, app, code).await.0 == StatusCode::GONE
        })
        .await;
    }
    assert!(
        at.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        at.elapsed()
    );
    let page = client
        .get(first.url(&format!("/{code}")))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(page.contains("disabled"), "{page}");
    // The code stays reserved: the alias cannot be taken again.
    let reuse = stack
        .post(&serde_json::json!({ "url": "https://example.com/", "alias": code }))
        .await;
    assert_eq!(reuse.status(), StatusCode::CONFLICT);

    let enabled = admin("enable").await.expect("enable");

    assert_eq!(enabled.status(), StatusCode::OK);
    for app in [&first, &second] {
        eventually("the link redirects again", || async {
            location(&client, app, code).await.0 == StatusCode::FOUND
        })
        .await;
    }
}
