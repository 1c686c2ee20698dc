//! Rate limits shared by every create instance, the failed-authentication block, the
//! in-process fallback, and the client IP behind trusted proxies.

use kurz_repository::Scope;
use kurz_testkit::{http_client, http_client_with_key};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{Stack, error_code, spawn_create};

/// A cheap request every scope set below may make: 404 for an unknown code.
async fn probe(client: &reqwest::Client, url: &str) -> Response {
    client.get(url).send().await.expect("request")
}

fn header(response: &Response, name: &str) -> String {
    response.headers()[name].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn a_keys_limit_is_shared_by_two_instances_and_the_headers_count_down() {
    const LIMIT: u32 = 12;
    let stack = Stack::start(2, 10).await;
    let (_, client) = stack
        .client_for("limited", &[Scope::LinksRead], Some(LIMIT))
        .await;
    let urls: Vec<String> = (0..2)
        .map(|i| stack.creates[i].url("/api/v1/links/nothere"))
        .collect();

    let mut remaining = Vec::new();
    let mut refused = Vec::new();
    for i in 0..(LIMIT as usize * 2) {
        let response = probe(&client, &urls[i % 2]).await;
        assert_eq!(header(&response, "x-ratelimit-limit"), LIMIT.to_string());
        assert!(header(&response, "ratelimit-policy").contains(&format!("q={LIMIT}")));
        match response.status() {
            StatusCode::NOT_FOUND => remaining.push(
                header(&response, "x-ratelimit-remaining")
                    .parse::<u32>()
                    .expect("n"),
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = header(&response, "retry-after").parse().expect("seconds");
                assert!(retry >= 1, "Retry-After {retry}");
                refused.push(error_code(response).await);
            }
            other => panic!("unexpected {other}"),
        }
    }

    // The quota refills one request every 5 s, so a test that runs long may see one more.
    let allowed = remaining.len() as u32;
    assert!((LIMIT..=LIMIT + 1).contains(&allowed), "{allowed} allowed");
    assert!(refused.iter().all(|c| c == "rate_limited"), "{refused:?}");
    assert!(
        remaining.windows(2).all(|w| w[1] <= w[0]),
        "remaining counts down: {remaining:?}"
    );
    assert_eq!(remaining.first(), Some(&(LIMIT - 1)));
}

#[tokio::test]
async fn an_ip_past_its_failed_authentication_budget_is_429_even_with_a_valid_key() {
    let stack = Stack::start(1, 10).await;
    let limited = spawn_create(
        &stack.env,
        &stack.redirect,
        &[("KURZ_AUTH_FAILURE_LIMIT_PER_MINUTE", "5")],
    )
    .await;
    let url = limited.url("/api/v1/links/nothere");
    let guesser = http_client_with_key("kurz_guessing-a-key");

    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(probe(&guesser, &url).await.status());
    }
    let valid = probe(&stack.client, &url).await;

    let failures = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(failures, 5, "{statuses:?}");
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(
        valid.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a valid key from that IP too"
    );
    assert!(header(&valid, "retry-after").parse::<u64>().expect("secs") >= 1);
    assert_eq!(error_code(valid).await, "rate_limited");
}

#[tokio::test]
async fn a_block_found_by_one_instance_refuses_the_ip_on_another() {
    let stack = Stack::start(0, 10).await;
    let vars = [("KURZ_AUTH_FAILURE_LIMIT_PER_MINUTE", "3")];
    let first = spawn_create(&stack.env, &stack.redirect, &vars).await;
    let second = spawn_create(&stack.env, &stack.redirect, &vars).await;
    let second_url = second.url("/api/v1/links/nothere");
    assert_eq!(
        probe(&stack.client, &second_url).await.status(),
        StatusCode::NOT_FOUND
    );
    let guesser = http_client_with_key("kurz_guessing-a-key");

    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(
                probe(&guesser, &first.url("/api/v1/links/nothere"))
                    .await
                    .status(),
            );
        }
        out
    };

    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // The second instance never saw a failure: it learns the block from the first.
    crate::helpers::eventually("the block reaches the other instance", || async {
        probe(&stack.client, &second_url).await.status() == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
}

#[tokio::test]
async fn requests_without_a_key_are_limited_per_ip() {
    let stack = Stack::start(0, 10).await;
    let open = spawn_create(
        &stack.env,
        &stack.redirect,
        &[
            ("KURZ_ANONYMOUS_CREATE", "true"),
            ("KURZ_ANONYMOUS_RATE_LIMIT_PER_MINUTE", "3"),
        ],
    )
    .await;
    let anonymous = http_client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let response = anonymous
            .post(open.url("/api/v1/links"))
            .json(&json!({ "url": format!("https://example.com/{i}") }))
            .send()
            .await
            .expect("post");
        statuses.push(response.status());
    }

    assert_eq!(&statuses[..3], &[StatusCode::CREATED; 3]);
    assert_eq!(&statuses[3..], &[StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 3);
}

#[tokio::test]
async fn with_redis_stopped_creates_keep_working_under_the_in_process_limit() {
    let stack = Stack::start(1, 50).await;
    let (_, client) = stack
        .client_for("offline", &[Scope::LinksWrite], Some(5))
        .await;
    // The key is verified and cached while everything is up.
    let first = client
        .post(stack.create().url("/api/v1/links"))
        .json(&json!({ "url": "https://example.com/before" }))
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), StatusCode::CREATED);

    stack.env.redis.stop().await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let response = client
            .post(stack.create().url("/api/v1/links"))
            .json(&json!({ "url": format!("https://example.com/offline/{i}") }))
            .send()
            .await
            .expect("post");
        statuses.push(response.status());
    }

    assert!(
        statuses.iter().all(|s| !s.is_server_error()),
        "{statuses:?}"
    );
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    // The in-process limiter starts with its own full quota: limited, never unlimited.
    assert!((4..=5).contains(&created), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let metrics = reqwest::get(stack.create().url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kurz_ratelimit_fallback ") && l.ends_with(" 1")),
        "the fallback is exported"
    );
}

#[tokio::test]
async fn forwarded_headers_change_the_subject_only_from_a_trusted_proxy() {
    let stack = Stack::start(0, 10).await;
    let vars = |trusted: &'static str| {
        [
            ("KURZ_ANONYMOUS_CREATE", "true"),
            ("KURZ_ANONYMOUS_RATE_LIMIT_PER_MINUTE", "2"),
            ("KURZ_TRUSTED_PROXIES", trusted),
        ]
    };
    let untrusting = spawn_create(&stack.env, &stack.redirect, &vars("")).await;
    let behind_proxy = spawn_create(&stack.env, &stack.redirect, &vars("127.0.0.1/32")).await;
    let anonymous = http_client();
    let statuses = |app: &kurz_testkit::RunningApp| {
        let url = app.url("/api/v1/links/nothere");
        let anonymous = anonymous.clone();
        async move {
            let mut out = Vec::new();
            for i in 0..4 {
                let response = anonymous
                    .get(&url)
                    .header("X-Forwarded-For", format!("198.51.100.{i}"))
                    .send()
                    .await
                    .expect("get");
                out.push(response.status());
            }
            out
        }
    };

    // Anonymous callers may only create, so an unthrottled read is 401 and a throttled 429.
    let spoofed = statuses(&untrusting).await;
    let forwarded = statuses(&behind_proxy).await;

    let throttled = |s: &[StatusCode]| {
        s.iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count()
    };
    assert_eq!(throttled(&spoofed), 2, "one subject, the peer: {spoofed:?}");
    assert_eq!(throttled(&forwarded), 0, "four subjects: {forwarded:?}");
}
