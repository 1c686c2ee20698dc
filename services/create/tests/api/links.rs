use chrono::{DateTime, Duration, Utc};
use deadpool_redis::redis;
use kurz_testkit::ShutdownMode;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, RETRY_AFTER};
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code, eventually};

#[tokio::test]
async fn creating_a_link_answers_201_and_its_short_url_redirects_to_the_normalized_target() {
    let stack = Stack::start(1, 100).await;

    let response = stack
        .post(&json!({ "url": "HTTPS://Example.COM:443/a/../b?q=1" }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    let code = body["code"].as_str().expect("code");
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    assert_eq!(location, format!("/api/v1/links/{code}"));
    assert_eq!(body["url"], "https://example.com/b?q=1");
    assert_eq!(body["short_url"], stack.redirect.url(&format!("/{code}")));
    assert!(
        body["created_at"]
            .as_str()
            .expect("created_at")
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
    assert_eq!(body["expires_at"], Value::Null);

    let followed = stack
        .follow(body["short_url"].as_str().expect("short_url"))
        .await;
    assert_eq!(followed.status(), StatusCode::FOUND);
    assert_eq!(followed.headers()[LOCATION], "https://example.com/b?q=1");
}

#[tokio::test]
async fn an_acknowledged_link_is_in_postgresql_and_in_the_cache() {
    let stack = Stack::start(1, 100).await;

    let body: Value = stack.create_link("https://example.com/x").await;

    let code = body["code"].as_str().expect("code");
    let stored: String = stack
        .env
        .sql()
        .await
        .query_one("SELECT target_url FROM links WHERE code = $1", &[&code])
        .await
        .expect("committed row")
        .get(0);
    assert_eq!(stored, "https://example.com/x");
    let mut redis = stack.env.redis_conn().await;
    let cached: Option<String> = redis::cmd("GET")
        .arg(format!("kurz:link:{code}"))
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(cached.as_deref(), Some("|https://example.com/x"));
}

#[tokio::test]
async fn get_returns_a_links_metadata_and_404_for_unknown_codes() {
    let stack = Stack::start(1, 100).await;
    let created: Value = stack.create_link("https://example.com/m").await;
    let code = created["code"].as_str().expect("code");

    let found = stack
        .client
        .get(stack.create().url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("get");
    let missing = stack
        .client
        .get(stack.create().url("/api/v1/links/nothere"))
        .send()
        .await
        .expect("get");

    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(found.json::<Value>().await.expect("json"), created);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(missing).await, "not_found");
}

#[tokio::test]
async fn delete_makes_a_cached_link_404_and_its_code_is_never_reused() {
    let stack = Stack::start(1, 100).await;
    let created: Value = stack.create_link("https://example.com/d").await;
    let (code, short_url) = (
        created["code"].as_str().expect("code"),
        created["short_url"].as_str().expect("url"),
    );
    assert_eq!(stack.follow(short_url).await.status(), StatusCode::FOUND);
    let api = stack.create().url(&format!("/api/v1/links/{code}"));

    let deleted = stack.client.delete(&api).send().await.expect("delete");

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // The redirect instance drops its in-memory copy when the invalidation arrives over
    // pub/sub, a moment after the 204.
    eventually("the deleted link answers 404", || async {
        stack.follow(short_url).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        stack.client.get(&api).send().await.expect("get").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        stack
            .client
            .delete(&api)
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::NOT_FOUND
    );
    let retaken = stack
        .post(&json!({ "url": "https://example.com/other", "alias": code }))
        .await;
    assert_eq!(
        retaken.status(),
        StatusCode::CONFLICT,
        "a deleted code stays taken"
    );
}

#[tokio::test]
async fn an_alias_becomes_the_code_and_leaves_the_pool() {
    let stack = Stack::start(1, 0).await;
    stack
        .env
        .sql()
        .await
        .batch_execute("INSERT INTO key_pool (code) VALUES ('MyAlias')")
        .await
        .expect("arrange");

    let response = stack
        .post(&json!({ "url": "https://example.com/a", "alias": "MyAlias" }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "MyAlias");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM key_pool WHERE code = 'MyAlias'")
            .await,
        0
    );
    let followed = stack.follow(body["short_url"].as_str().expect("url")).await;
    assert_eq!(followed.headers()[LOCATION], "https://example.com/a");
}

#[tokio::test]
async fn a_taken_alias_is_409_and_changes_nothing() {
    let stack = Stack::start(1, 10).await;
    stack
        .post(&json!({ "url": "https://example.com/1", "alias": "taken" }))
        .await;
    // A key claimed by an instance is taken too, used or not.
    stack
        .env
        .sql()
        .await
        .batch_execute("INSERT INTO issued_codes (code) VALUES ('Claimed')")
        .await
        .expect("arrange");

    for alias in ["taken", "Claimed"] {
        let response = stack
            .post(&json!({ "url": "https://example.com/2", "alias": alias }))
            .await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{alias}");
        assert_eq!(error_code(response).await, "alias_taken");
    }
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 1);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM links WHERE target_url = 'https://example.com/2'")
            .await,
        0
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_alias_create_exactly_one_link() {
    let stack = Stack::start(1, 10).await;

    let bodies: Vec<Value> = (0..16)
        .map(|i| json!({ "url": format!("https://example.com/{i}"), "alias": "race" }))
        .collect();
    let attempts = bodies.iter().map(|body| stack.post(body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM links WHERE code = 'race'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_expiry_is_stored_and_the_link_redirects_until_then() {
    let stack = Stack::start(1, 10).await;
    let at = (Utc::now() + Duration::days(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();

    let response = stack
        .post(&json!({ "url": "https://example.com/e", "expires_at": at }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse::<DateTime<Utc>>()
            .expect("date"),
        at.parse::<DateTime<Utc>>().expect("date")
    );
    assert_eq!(
        stack
            .follow(body["short_url"].as_str().expect("url"))
            .await
            .status(),
        StatusCode::FOUND
    );
}

#[tokio::test]
async fn with_redis_down_creates_still_succeed_and_redirect() {
    let stack = Stack::start(1, 10).await;
    stack.env.redis.stop().await;

    let response = stack
        .post(&json!({ "url": "https://example.com/nr" }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    let followed = stack.follow(body["short_url"].as_str().expect("url")).await;
    assert_eq!(followed.headers()[LOCATION], "https://example.com/nr");
}

#[tokio::test]
async fn with_postgresql_down_creates_get_503_with_retry_after() {
    let stack = Stack::start(1, 10).await;
    stack.env.postgres.stop(ShutdownMode::Immediate).await;

    let response = stack
        .post(&json!({ "url": "https://example.com/pg", "alias": "pgdown" }))
        .await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(RETRY_AFTER));
    let body = response.text().await.expect("body");
    assert!(body.contains("\"unavailable\""), "{body}");
    assert!(
        !body.to_lowercase().contains("postgres"),
        "no internals in the body: {body}"
    );
}

#[tokio::test]
async fn with_postgresql_down_concurrent_pool_key_creates_all_say_unavailable() {
    let stack = Stack::start(1, 10).await;
    stack.env.postgres.stop(ShutdownMode::Immediate).await;

    // No key is buffered yet, so every request needs the claim that fails.
    let body = json!({ "url": "https://example.com/k" });
    let responses = futures_util::future::join_all((0..8).map(|_| stack.post(&body))).await;

    for response in responses {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            error_code(response).await,
            "unavailable",
            "not key_pool_empty: the pool is not empty"
        );
    }
}

#[tokio::test]
async fn a_link_created_with_its_behaviour_shows_and_stores_it() {
    let stack = Stack::start(1, 100).await;

    let response = stack
        .post(&json!({
            "url": "https://example.com/campaign",
            "redirect_status": 308,
            "forward_query": true,
            "expired_url": "HTTPS://Example.com/over",
            "max_visits": 100,
        }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["redirect_status"], 308);
    assert_eq!(body["forward_query"], true);
    assert_eq!(body["expired_url"], "https://example.com/over");
    assert_eq!(body["max_visits"], 100);
    assert_eq!(body["visits"], 0);
    assert_eq!(body["status"], "active");
    assert_eq!(body["updated_at"], body["created_at"]);
    let row = stack
        .env
        .sql()
        .await
        .query_one(
            "SELECT redirect_status, forward_query, expired_url, max_visits FROM links \
             WHERE code = $1",
            &[&body["code"].as_str().expect("code")],
        )
        .await
        .expect("committed row");
    assert_eq!(row.get::<_, Option<i16>>(0), Some(308));
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("https://example.com/over")
    );
    assert_eq!(row.get::<_, Option<i64>>(3), Some(100));
}

#[tokio::test]
async fn a_link_created_without_behaviour_has_the_defaults_and_counts_no_visits() {
    let stack = Stack::start(1, 100).await;

    let body = stack.create_link("https://example.com/plain").await;

    assert_eq!(body["redirect_status"], Value::Null);
    assert_eq!(body["forward_query"], false);
    assert_eq!(body["expired_url"], Value::Null);
    assert_eq!(body["max_visits"], Value::Null);
    assert_eq!(body["visits"], Value::Null);
}
