//! `POST /api/v1/links/bulk`: items answered one by one, the valid ones committed together.

use kurz_repository::Scope;
use kurz_testkit::http_client;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code, spawn_create};

async fn bulk(client: &reqwest::Client, stack: &Stack, links: Value) -> Response {
    bulk_with_key(client, stack, links, None).await
}

async fn bulk_with_key(
    client: &reqwest::Client,
    stack: &Stack,
    links: Value,
    key: Option<&str>,
) -> Response {
    let mut request = client
        .post(stack.create().url("/api/v1/links/bulk"))
        .json(&json!({ "links": links }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("bulk request")
}

async fn results(response: Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["results"].as_array().expect("results").clone()
}

fn header(response: &Response, name: &str) -> String {
    response.headers()[name].to_str().expect("ascii").to_owned()
}

/// `(index, status, error code or link code)` of each result.
fn summary(results: &[Value]) -> Vec<(u64, u64, String)> {
    results
        .iter()
        .map(|r| {
            let detail = r["error"]["code"]
                .as_str()
                .or(r["link"]["code"].as_str())
                .expect("an error or a link")
                .to_owned();
            (
                r["index"].as_u64().expect("index"),
                r["status"].as_u64().expect("status"),
                detail,
            )
        })
        .collect()
}

#[tokio::test]
async fn valid_and_invalid_items_are_answered_in_order_and_only_the_valid_ones_are_stored() {
    let stack = Stack::start(1, 100).await;

    let response = bulk(
        &stack.client,
        &stack,
        json!([
            { "url": "https://example.com/one" },
            { "url": "ftp://example.com/nope" },
            { "alias": "no-url-here" },
            { "url": "https://example.com/two", "alias": "bulk-two", "max_visits": 5 },
            "not even an object",
            { "url": "https://example.com/three", "expires_at": "yesterday" },
            { "url": "https://example.com/four", "color": "red" },
        ]),
    )
    .await;

    let results = results(response).await;
    let summary = summary(&results);
    let statuses: Vec<(u64, u64)> = summary.iter().map(|(i, s, _)| (*i, *s)).collect();
    assert_eq!(
        statuses,
        [
            (0, 201),
            (1, 422),
            (2, 422),
            (3, 201),
            (4, 422),
            (5, 422),
            (6, 422)
        ]
    );
    let codes: Vec<&str> = summary.iter().map(|(_, _, c)| c.as_str()).collect();
    assert_eq!(
        codes[1..],
        [
            "unsupported_scheme",
            "invalid_body",
            "bulk-two",
            "invalid_body",
            "invalid_expires_at",
            "invalid_body"
        ]
    );
    assert_eq!(results[0]["link"]["url"], "https://example.com/one");
    assert_eq!(results[3]["link"]["max_visits"], 5);
    let first = results[0]["link"]["code"].as_str().expect("code");
    let stored = stack
        .env
        .sql()
        .await
        .query(
            "SELECT code, target_url, owner_id FROM links ORDER BY target_url",
            &[],
        )
        .await
        .expect("query");
    let stored: Vec<(String, String)> = stored.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stored,
        [
            (first.to_owned(), "https://example.com/one".to_owned()),
            ("bulk-two".to_owned(), "https://example.com/two".to_owned()),
        ]
    );
    let followed = stack
        .follow(results[3]["link"]["short_url"].as_str().expect("short_url"))
        .await;
    assert_eq!(followed.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn a_repeated_alias_goes_to_the_first_item_and_a_taken_one_fails_only_its_item() {
    let stack = Stack::start(1, 100).await;
    let taken = stack
        .post(&json!({ "url": "https://example.com/old", "alias": "taken-one" }))
        .await;
    assert_eq!(taken.status(), StatusCode::CREATED);

    let results = results(
        bulk(
            &stack.client,
            &stack,
            json!([
                { "url": "https://example.com/a", "alias": "twice" },
                { "url": "https://example.com/b", "alias": "taken-one" },
                { "url": "https://example.com/c", "alias": "twice" },
                { "url": "https://example.com/d" },
            ]),
        )
        .await,
    )
    .await;

    let summary: Vec<(u64, String)> = summary(&results)
        .into_iter()
        .map(|(_, status, detail)| (status, detail))
        .collect();
    assert_eq!(summary[0], (201, "twice".to_owned()));
    assert_eq!(summary[1], (409, "alias_taken".to_owned()));
    assert_eq!(summary[2], (409, "alias_taken".to_owned()));
    assert_eq!(summary[3].0, 201);
    let twice = stack
        .count("SELECT count(*) FROM links WHERE code = 'twice' AND target_url = 'https://example.com/a'")
        .await;
    assert_eq!(twice, 1, "the first item has the alias");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 3);
    let old = stack
        .count("SELECT count(*) FROM links WHERE code = 'taken-one' AND target_url = 'https://example.com/old'")
        .await;
    assert_eq!(old, 1, "the taken alias still points where it did");
}

#[tokio::test]
async fn zero_items_and_more_than_the_limit_are_422_and_create_nothing() {
    let stack = Stack::start_with(1, 100, &[("KURZ_BULK_MAX_ITEMS", "3")]).await;
    let four: Vec<Value> = (0..4)
        .map(|i| json!({ "url": format!("https://example.com/{i}") }))
        .collect();

    let none = bulk(&stack.client, &stack, json!([])).await;
    let too_many = bulk(&stack.client, &stack, Value::Array(four.clone())).await;
    let at_the_limit = bulk(&stack.client, &stack, Value::Array(four[..3].to_vec())).await;
    let no_links = stack
        .client
        .post(stack.create().url("/api/v1/links/bulk"))
        .json(&json!({ "items": [] }))
        .send()
        .await
        .expect("request");

    assert_eq!(none.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(none).await, "no_items");
    assert_eq!(too_many.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = too_many.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_items");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains('3')
    );
    assert_eq!(error_code(no_links).await, "invalid_body");
    assert_eq!(results(at_the_limit).await.len(), 3);
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 3);
}

#[tokio::test]
async fn the_body_limit_grows_with_the_item_limit() {
    let stack = Stack::start_with(1, 100, &[("KURZ_BULK_MAX_ITEMS", "2")]).await;
    // Two items of the longest URL fit; the single-create limit (12,288 bytes) would not.
    let long = format!("https://example.com/{}", "a".repeat(8_000));
    let fits = bulk(
        &stack.client,
        &stack,
        json!([{ "url": long }, { "url": long }]),
    )
    .await;
    let padding = "b".repeat(30_000);
    let too_large = stack
        .client
        .post(stack.create().url("/api/v1/links/bulk"))
        .json(&json!({ "links": [{ "url": format!("https://example.com/{padding}") }] }))
        .send()
        .await
        .expect("request");

    assert_eq!(summary(&results(fits).await).len(), 2);
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn bulk_needs_links_write_and_is_refused_to_anonymous_callers() {
    let stack = Stack::start(1, 100).await;
    let open = spawn_create(
        &stack.env,
        &stack.redirect,
        &[("KURZ_ANONYMOUS_CREATE", "true")],
    )
    .await;
    let (_, reader) = stack.client_for("r", &[Scope::LinksRead], None).await;
    let links = json!({ "links": [{ "url": "https://example.com/x" }] });

    let anonymous = http_client()
        .post(open.url("/api/v1/links/bulk"))
        .json(&links)
        .send()
        .await
        .expect("request");
    let read_only = reader
        .post(stack.create().url("/api/v1/links/bulk"))
        .json(&links)
        .send()
        .await
        .expect("request");

    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(read_only).await, "insufficient_scope");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 0);
}

#[tokio::test]
async fn every_item_counts_against_the_rate_limit_and_a_call_that_does_not_fit_creates_nothing() {
    let stack = Stack::start(1, 100).await;
    let (_, client) = stack
        .client_for("limited", &[Scope::LinksWrite], Some(10))
        .await;
    let items = |n: usize, tag: &str| {
        Value::Array(
            (0..n)
                .map(|i| json!({ "url": format!("https://example.com/{tag}/{i}") }))
                .collect(),
        )
    };

    // More than the key may make at once could never fit: 422 (the call itself is one).
    let over_the_burst = bulk(&client, &stack, items(11, "d")).await;
    // Invalid items count too: 3 valid and 1 refused are 4 requests.
    let mut four = items(3, "a");
    four.as_array_mut()
        .expect("array")
        .push(json!({ "url": "not a url" }));
    let first = bulk(&client, &stack, four).await;
    let remaining_after_first = header(&first, "x-ratelimit-remaining");
    let refused = bulk(&client, &stack, items(6, "b")).await;
    let refused_remaining = header(&refused, "x-ratelimit-remaining");
    let refused_retry = header(&refused, "retry-after");
    let refused_code = error_code(refused).await;
    let rest = bulk(&client, &stack, items(4, "c")).await;

    assert_eq!(over_the_burst.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(over_the_burst).await, "too_many_items");
    assert_eq!(remaining_after_first, "5");
    assert_eq!(refused_code, "rate_limited");
    // The call itself took one, as every call does; its other five items did not fit in four.
    assert_eq!(refused_remaining, "4");
    assert!(refused_retry.parse::<u64>().expect("seconds") >= 1);
    assert_eq!(header(&rest, "x-ratelimit-remaining"), "0");
    assert_eq!(results(rest).await.len(), 4);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM links WHERE target_url LIKE 'https://example.com/b/%'")
            .await,
        0,
        "the refused call created nothing"
    );
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 7);
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_same_results_and_another_body_is_422() {
    let stack = Stack::start(1, 100).await;
    let (_, client) = stack
        .client_for("retrier", &[Scope::LinksWrite], Some(10))
        .await;
    let links = json!([
        { "url": "https://example.com/p" },
        { "url": "https://example.com/q", "alias": "replayed" },
        { "url": "javascript:alert(1)" },
    ]);

    let first = bulk_with_key(&client, &stack, links.clone(), Some("batch-1")).await;
    let first_remaining = header(&first, "x-ratelimit-remaining");
    let first: Value = first.json().await.expect("json");
    let replay = bulk_with_key(&client, &stack, links.clone(), Some("batch-1")).await;
    let other = bulk_with_key(
        &client,
        &stack,
        json!([{ "url": "https://example.com/other" }]),
        Some("batch-1"),
    )
    .await;
    let single = client
        .post(stack.create().url("/api/v1/links"))
        .header("Idempotency-Key", "batch-1")
        .json(&json!({ "url": "https://example.com/p" }))
        .send()
        .await
        .expect("request");
    let (_, stranger) = stack
        .client_for("stranger", &[Scope::LinksWrite], None)
        .await;
    let foreign = bulk_with_key(&stranger, &stack, links, Some("batch-1")).await;

    assert_eq!(first_remaining, "7");
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(header(&replay, "idempotent-replayed"), "true");
    assert_eq!(
        header(&replay, "x-ratelimit-remaining"),
        "6",
        "a replay is one request, not one per item"
    );
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay, first, "the same results, codes and all");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(other).await, "idempotency_key_reused");
    assert_eq!(single.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(single).await, "idempotency_key_reused");
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 2);
}

#[tokio::test]
async fn bulk_created_links_are_warmed_in_redis() {
    let stack = Stack::start(1, 100).await;

    let results = results(
        bulk(
            &stack.client,
            &stack,
            json!([
                { "url": "https://example.com/warm" },
                { "url": "https://example.com/warm-alias", "alias": "warm-alias" },
            ]),
        )
        .await,
    )
    .await;

    let mut redis = stack.env.redis_conn().await;
    for result in &results {
        let code = result["link"]["code"].as_str().expect("code");
        let cached: Option<String> = deadpool_redis::redis::cmd("GET")
            .arg(format!("kurz:link:{code}"))
            .query_async(&mut redis)
            .await
            .expect("GET");
        let url = result["link"]["url"].as_str().expect("url");
        assert_eq!(cached, Some(format!("|{url}")), "{code}");
    }
}
