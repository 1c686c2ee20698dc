//! Many create instances sharing one database, under many concurrent clients.

use std::collections::HashSet;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::helpers::{Stack, post_link};

const INSTANCES: usize = 4;
const CLIENTS: usize = 32;
const LINKS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_and_32_clients_create_20000_distinct_links_that_all_resolve() {
    let stack = Stack::start(INSTANCES, 25_000).await;

    let created: Vec<(String, String, String)> = futures_util::stream::iter(0..LINKS)
        .map(|i| {
            let (client, app) = (&stack.client, &stack.creates[i % INSTANCES]);
            async move {
                let url = format!("https://example.com/{i}");
                let response = post_link(client, app, &json!({ "url": url })).await;
                assert_eq!(response.status(), StatusCode::CREATED, "link {i}");
                let body: Value = response.json().await.expect("json");
                let field = |k: &str| body[k].as_str().expect("string field").to_owned();
                (field("code"), field("short_url"), url)
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;

    let codes: HashSet<&String> = created.iter().map(|(code, _, _)| code).collect();
    assert_eq!(codes.len(), LINKS, "every code is distinct");
    assert_eq!(
        stack.count("SELECT count(*) FROM links").await,
        LINKS as i64
    );

    let stack = &stack;
    let wrong: Vec<String> = futures_util::stream::iter(&created)
        .map(|(code, short_url, url)| async move {
            let response = stack.follow(short_url).await;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            (response.status() != StatusCode::FOUND || location.as_deref() != Some(url.as_str()))
                .then(|| format!("{code}: {} {location:?}", response.status()))
        })
        .buffer_unordered(CLIENTS)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        wrong.is_empty(),
        "{} links did not resolve to their own URL: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
