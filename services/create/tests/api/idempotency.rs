//! `Idempotency-Key`: a client that lost a response can retry safely.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code};

async fn post_with_key(stack: &Stack, key: &str, body: &Value) -> reqwest::Response {
    stack
        .client
        .post(stack.create().url("/api/v1/links"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_returns_the_same_link() {
    let stack = Stack::start(1, 100).await;
    let body = json!({ "url": "https://example.com/once" });

    let first = post_with_key(&stack, "order-42", &body).await;
    let retry = post_with_key(&stack, "order-42", &body).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (first, retry): (Value, Value) = (
        first.json().await.expect("json"),
        retry.json().await.expect("json"),
    );
    assert_eq!(first, retry, "same code, same body");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_creates_nothing() {
    let stack = Stack::start(1, 100).await;
    post_with_key(
        &stack,
        "order-43",
        &json!({ "url": "https://example.com/a" }),
    )
    .await;

    let other = post_with_key(
        &stack,
        "order-43",
        &json!({ "url": "https://example.com/b" }),
    )
    .await;

    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(other).await, "idempotency_key_reused");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_behaviour_is_422_and_creates_nothing() {
    let stack = Stack::start(1, 100).await;
    let url = "https://example.com/a";
    post_with_key(&stack, "order-44", &json!({ "url": url })).await;

    for changed in [
        json!({ "url": url, "max_visits": 10 }),
        json!({ "url": url, "redirect_status": 301 }),
        json!({ "url": url, "forward_query": true }),
        json!({ "url": url, "expired_url": "https://example.com/over" }),
    ] {
        let other = post_with_key(&stack, "order-44", &changed).await;
        assert_eq!(
            other.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{changed}"
        );
        assert_eq!(error_code(other).await, "idempotency_key_reused");
    }
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_one_link() {
    let stack = Stack::start(2, 5_000).await;
    let body = json!({ "url": "https://example.com/burst" });

    let requests = (0..16).map(|i| {
        let (stack, body) = (&stack, &body);
        async move {
            stack
                .client
                .post(stack.creates[i % 2].url("/api/v1/links"))
                .header("Idempotency-Key", "burst-1")
                .json(body)
                .send()
                .await
                .expect("request")
        }
    });
    let responses = futures_util::future::join_all(requests).await;

    let mut codes = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::CREATED);
        codes.push(response.json::<Value>().await.expect("json")["code"].clone());
    }
    codes.dedup();
    assert_eq!(
        codes.len(),
        1,
        "every duplicate got the same link: {codes:?}"
    );
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 1);
}

#[tokio::test]
async fn an_alias_create_is_replayed_rather_than_refused_as_taken() {
    let stack = Stack::start(1, 10).await;
    let body = json!({ "url": "https://example.com/al", "alias": "retry-me" });

    let first = post_with_key(&stack, "alias-1", &body).await;
    let retry = post_with_key(&stack, "alias-1", &body).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        retry.status(),
        StatusCode::CREATED,
        "not 409: it is the same request"
    );
    assert_eq!(
        retry.json::<Value>().await.expect("json")["code"],
        "retry-me"
    );
}

#[tokio::test]
async fn a_failed_create_does_not_consume_its_key() {
    let stack = Stack::start(1, 10).await;
    stack
        .post(&json!({ "url": "https://example.com/x", "alias": "taken1" }))
        .await;

    let refused = post_with_key(
        &stack,
        "k-1",
        &json!({ "url": "https://example.com/y", "alias": "taken1" }),
    )
    .await;
    let retried = post_with_key(
        &stack,
        "k-1",
        &json!({ "url": "https://example.com/y", "alias": "free1" }),
    )
    .await;

    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(
        retried.status(),
        StatusCode::CREATED,
        "the key was released with the rollback"
    );
}

#[tokio::test]
async fn a_malformed_key_is_400() {
    let stack = Stack::start(1, 10).await;

    let response = post_with_key(
        &stack,
        &"k".repeat(256),
        &json!({ "url": "https://example.com/" }),
    )
    .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_idempotency_key");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 0);
}

#[tokio::test]
async fn keys_older_than_a_day_are_swept_by_the_worker() {
    let stack = Stack::start(1, 10).await;
    post_with_key(&stack, "old", &json!({ "url": "https://example.com/old" })).await;
    post_with_key(&stack, "new", &json!({ "url": "https://example.com/new" })).await;
    stack
        .env
        .sql()
        .await
        .batch_execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        .await
        .expect("age a key");

    let deleted = crate::helpers::worker(&stack.env)
        .await
        .sweep_idempotency_keys()
        .await
        .expect("sweep");

    assert_eq!(deleted, 1);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM idempotency_keys WHERE key = 'new'")
            .await,
        1
    );
}
