//! Nothing acknowledged is lost, and a burst against a dead database stays bounded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use futures_util::StreamExt;
use kurz_testkit::{Fault, ShutdownMode, TestEnv, http_client};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::helpers::{Stack, spawn_redirect_with, worker};

const CLIENTS: usize = 16;
/// Acknowledgements before PostgreSQL is killed, and after it is back.
const BEFORE_CRASH: usize = 400;
const AFTER_RESTART: usize = 300;
/// Bounds on the load whatever happens.
const MAX_ATTEMPTS: usize = 20_000;
const MAX_DURATION: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_acknowledged_around_an_immediate_postgres_shutdown_all_survive() {
    let stack = Stack::start_with(2, 20_000, &[("KURZ_KEY_BATCH_SIZE", "200")]).await;
    let (attempts, acknowledged, after_restart) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let restarted = AtomicBool::new(false);
    let started = Instant::now();
    let client_loop = || async {
        let mut acked = Vec::new();
        loop {
            let done = restarted.load(Ordering::Acquire)
                && after_restart.load(Ordering::Relaxed) >= AFTER_RESTART;
            let i = attempts.fetch_add(1, Ordering::Relaxed);
            if done || i >= MAX_ATTEMPTS || started.elapsed() > MAX_DURATION {
                return acked;
            }
            let url = format!("https://example.com/durable/{i}");
            let sent = stack
                .client
                .post(stack.creates[i % 2].url("/api/v1/links"))
                .json(&json!({ "url": url }))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let Some(response) = sent.ok().filter(|r| r.status() == StatusCode::CREATED) else {
                // 503 while PostgreSQL is away: back off a little, as a client should.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let body: Value = response.json().await.expect("a 201 has a body");
            acknowledged.fetch_add(1, Ordering::Relaxed);
            if restarted.load(Ordering::Acquire) {
                after_restart.fetch_add(1, Ordering::Relaxed);
            }
            acked.push((body["code"].as_str().expect("code").to_owned(), url));
        }
    };
    let crash = async {
        while acknowledged.load(Ordering::Relaxed) < BEFORE_CRASH {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stack.env.postgres.stop(ShutdownMode::Immediate).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.env.postgres.restart().await;
        restarted.store(true, Ordering::Release);
    };

    let (acked, ()) = tokio::join!(
        futures_util::future::join_all((0..CLIENTS).map(|_| client_loop())),
        crash
    );

    let acked: Vec<(String, String)> = acked.into_iter().flatten().collect();
    println!(
        "{} creates acknowledged ({} after the restart) in {} attempts",
        acked.len(),
        after_restart.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed).min(MAX_ATTEMPTS)
    );
    assert!(
        after_restart.load(Ordering::Relaxed) >= AFTER_RESTART,
        "creates resumed after the restart"
    );
    let codes: HashSet<&String> = acked.iter().map(|(code, _)| code).collect();
    assert_eq!(codes.len(), acked.len(), "no code was issued twice");
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");
    let sql = stack.env.sql().await;
    for (code, url) in &acked {
        let stored: Option<String> = sql
            .query_opt("SELECT target_url FROM links WHERE code = $1", &[code])
            .await
            .expect("query")
            .map(|r| r.get(0));
        assert_eq!(
            stored.as_deref(),
            Some(url.as_str()),
            "acknowledged link {code} was lost"
        );
    }
    for (code, url) in acked.iter().step_by(10) {
        let followed = stack.follow(&stack.redirect.url(&format!("/{code}"))).await;
        assert_eq!(
            followed
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().expect("ascii")),
            Some(url.as_str())
        );
    }
}

/// Resident memory of this process (the services under test run in it), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_a_blackholed_postgres_gets_503s_with_bounded_connections_and_memory() {
    let env = TestEnv::start().await;
    worker(&env).await.add_keys(10).await.expect("keys");
    let pg = env.postgres_proxy().await;
    let db_url = env.database_url_via(&pg);
    let redirect = spawn_redirect_with(
        &env,
        &[
            ("KURZ_DATABASE_URL", db_url.as_str()),
            ("KURZ_DATABASE_POOL_SIZE", "8"),
            ("KURZ_DATABASE_POOL_TIMEOUT_MS", "300"),
            // Room for the schema check's first connection on a loaded two-core machine;
            // the burst itself meets an open breaker, so this bound does not shape it.
            ("KURZ_DATABASE_CONNECT_TIMEOUT_MS", "1000"),
            ("KURZ_DATABASE_STATEMENT_TIMEOUT_MS", "500"),
            ("KURZ_BREAKER_FAILURES", "3"),
            ("KURZ_BREAKER_BACKOFF_SECS", "5"),
        ],
    )
    .await;
    let client = http_client();
    pg.set(Fault::Blackhole);
    for i in 0..20 {
        let readyz: Value = client
            .get(redirect.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if readyz["breaker"] == "open" {
            break;
        }
        assert!(i < 19, "the breaker never opened");
        client
            .get(redirect.url(&format!("/trip{i:03}")))
            .send()
            .await
            .expect("answered");
    }
    let memory_before = resident_bytes();

    let statuses: Vec<StatusCode> = futures_util::stream::iter(0..1_000)
        .map(|i| {
            let (client, url) = (&client, redirect.url(&format!("/burst{i:04}")));
            async move { client.get(url).send().await.expect("answered").status() }
        })
        .buffer_unordered(100)
        .collect()
        .await;

    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "every request got 503"
    );
    assert!(
        pg.open_connections() <= 8,
        "{} connections to PostgreSQL, pool size 8",
        pg.open_connections()
    );
    let growth = resident_bytes().saturating_sub(memory_before);
    assert!(
        growth < 64 * 1024 * 1024,
        "memory grew by {} MiB",
        growth / (1024 * 1024)
    );
}
