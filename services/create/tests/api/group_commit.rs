//! Concurrent creates share commits (group commit), and every acknowledged link is stored.

use futures_util::StreamExt;
use kurz_testkit::RunningApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Stack, post_link};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_batched_and_every_acknowledged_link_is_stored() {
    let stack = Stack::start(0, 5_000).await;
    let source = stack
        .env
        .source()
        .with("KURZ_PUBLIC_BASE_URL", stack.redirect.url("/"));
    let app = kurz_create::Application::build(
        kurz_create::Settings::from_source(&source).expect("settings"),
    )
    .await
    .expect("create starts");
    let stats = app.insert_stats();
    let create = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));

    let acked: Vec<(String, String)> = futures_util::stream::iter(0..2_000)
        .map(|i| {
            let (client, create) = (&stack.client, &create);
            async move {
                let url = format!("https://example.com/batch/{i}");
                let response = post_link(client, create, &json!({ "url": url })).await;
                assert_eq!(response.status(), StatusCode::CREATED);
                let body: Value = response.json().await.expect("json");
                (body["code"].as_str().expect("code").to_owned(), url)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    println!(
        "{} rows in {} batches, largest {}",
        stats.rows(),
        stats.batches(),
        stats.largest()
    );
    assert_eq!(
        stats.rows(),
        2_000,
        "every pool-key create went through the batcher"
    );
    assert!(stats.largest() > 1, "concurrent creates shared a statement");
    assert!(stats.batches() < 2_000, "fewer commits than creates");
    let sql = stack.env.sql().await;
    for (code, url) in &acked {
        let stored: String = sql
            .query_one("SELECT target_url FROM links WHERE code = $1", &[code])
            .await
            .expect("an acknowledged link is committed")
            .get(0);
        assert_eq!(&stored, url);
    }
}
