//! Keys come from the pool in batches; no key is ever handed out twice.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code, post_link, spawn_create, worker};

#[tokio::test]
async fn creates_take_keys_from_one_batch_claim_not_one_claim_each() {
    let stack = Stack::start_with(1, 1_000, &[("KURZ_KEY_BATCH_SIZE", "100")]).await;

    for i in 0..10 {
        let response = stack
            .post(&json!({ "url": format!("https://example.com/{i}") }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    assert_eq!(stack.count("SELECT count(*) FROM links").await, 10);
    assert_eq!(
        stack.count("SELECT count(*) FROM issued_codes").await,
        100,
        "one batch of 100 claimed"
    );
    assert_eq!(stack.count("SELECT count(*) FROM key_pool").await, 900);
}

#[tokio::test]
async fn an_empty_pool_gives_503_with_retry_after_and_a_refill_step_ends_it() {
    let stack = Stack::start(1, 0).await;

    let refused = stack
        .client
        .post(stack.create().url("/api/v1/links"))
        .json(&json!({ "url": "https://example.com/" }))
        // Bounds the wait: an empty pool must be answered, not hang.
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("answered before the timeout");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(RETRY_AFTER));
    assert_eq!(error_code(refused).await, "key_pool_empty");

    worker(&stack.env)
        .await
        .refill_once()
        .await
        .expect("refill");

    let accepted = stack.post(&json!({ "url": "https://example.com/" })).await;
    assert_eq!(accepted.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn keys_claimed_by_a_dropped_instance_are_never_handed_out_again() {
    let stack = Stack::start_with(0, 600, &[]).await;
    let batch = [("KURZ_KEY_BATCH_SIZE", "100")];
    let dropped = spawn_create(&stack.env, &stack.redirect, &batch).await;
    let first = post_link(
        &stack.client,
        &dropped,
        &json!({ "url": "https://example.com/first" }),
    )
    .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let stranded: HashSet<String> = stack
        .env
        .sql()
        .await
        .query(
            "SELECT code FROM issued_codes EXCEPT SELECT code FROM links",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stranded.len(),
        99,
        "the dropped instance holds 99 unused keys"
    );
    dropped.abort();

    // Another instance drains the rest of the pool.
    let survivor = spawn_create(&stack.env, &stack.redirect, &batch).await;
    let mut handed_out = Vec::new();
    loop {
        let response = post_link(
            &stack.client,
            &survivor,
            &json!({ "url": "https://example.com/next" }),
        )
        .await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        handed_out.push(body["code"].as_str().expect("code").to_owned());
    }

    assert_eq!(
        handed_out.len(),
        500,
        "the survivor got every key left in the pool"
    );
    assert!(
        handed_out.iter().all(|code| !stranded.contains(code)),
        "a stranded key was reused"
    );
}
