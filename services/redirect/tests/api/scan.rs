//! Scan resistance: a budget of unknown codes per client IP, shared by every instance.

use deadpool_redis::redis;
use kurz_repository::codes::generate_key;
use kurz_telemetry::metrics::names;
use kurz_testkit::metrics::scrape;
use kurz_testkit::{RunningApp, TestEnv, http_client};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, RETRY_AFTER};

use crate::helpers::{insert, spawn_redirect};

const SCANNER: &str = "203.0.113.9";
const BYSTANDER: &str = "198.51.100.7";
/// The test client connects from loopback; trusting it lets `X-Forwarded-For` stand for
/// distinct clients, which also exercises the trusted-proxy path.
const TRUST_LOOPBACK: (&str, &str) = ("KURZ_TRUSTED_PROXIES", "127.0.0.1/32");

/// `GET path` on `app`, as `client` behind the trusted proxy (or, with `None`, as the peer).
async fn get(app: &RunningApp, path: &str, client: Option<&str>) -> reqwest::Response {
    let mut request = http_client().get(app.url(path));
    if let Some(ip) = client {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.expect("request")
}

/// A random well-formed code, as a scanner would try.
fn random_code() -> String {
    format!("/{}", generate_key(7))
}

/// The statuses of `n` random probes, alternating between `apps`.
async fn scan(
    apps: &[&RunningApp],
    n: usize,
    client: impl Fn(usize) -> Option<String>,
) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let response = get(apps[i % apps.len()], &random_code(), client(i).as_deref()).await;
        statuses.push(response.status().as_u16());
    }
    statuses
}

/// 404s before the first 429.
fn misses_before_throttling(statuses: &[u16]) -> usize {
    statuses.iter().take_while(|s| **s == 404).count()
}

async fn scan_keys(env: &TestEnv) -> Vec<String> {
    let mut conn = env.redis_conn().await;
    redis::cmd("KEYS")
        .arg("kurz:rl:{scan:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn a_scanner_is_throttled_after_its_budget_across_instances_and_learns_nothing() {
    let env = TestEnv::start().await;
    insert(&env, "live123", "https://example.com/live", None).await;
    let a = spawn_redirect(&env, &[TRUST_LOOPBACK]).await;
    let b = spawn_redirect(&env, &[TRUST_LOOPBACK]).await;

    let statuses = scan(&[&a, &b], 2_000, |_| Some(SCANNER.to_owned())).await;

    let misses = misses_before_throttling(&statuses);
    assert!(
        (90..=110).contains(&misses),
        "{misses} misses before the first 429"
    );
    assert!(
        statuses[misses..].iter().all(|s| *s == 429),
        "once throttled, every answer is 429"
    );
    for app in [&a, &b] {
        let live = get(app, "/live123", Some(SCANNER)).await;
        assert_eq!(
            live.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "a live code too"
        );
        let retry: u64 = live.headers()[RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("whole seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(live.headers()[CACHE_CONTROL], "no-store");
        assert!(!live.text().await.expect("body").is_empty(), "a small body");

        assert_eq!(get(app, "/live123", Some(BYSTANDER)).await.status(), 302);
        assert_eq!(
            get(app, &random_code(), Some(BYSTANDER)).await.status(),
            404
        );
    }
    let metrics = scrape(a.url("").trim_end_matches('/')).await;
    let limited = [("limit", "scan"), ("result", "limited")];
    assert!(metrics.sum(names::RATELIMIT_DECISIONS, &limited) >= 1.0);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_subject() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[("KURZ_SCAN_BUDGET", "20")]).await;

    // A fresh "client address" in every request, which nobody vouches for.
    let statuses = scan(&[&app], 40, |i| Some(format!("198.51.100.{i}"))).await;

    assert_eq!(misses_before_throttling(&statuses), 20, "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429));
    assert_eq!(scan_keys(&env).await, ["kurz:rl:{scan:127.0.0.1}"]);
}

#[tokio::test]
async fn with_redis_down_each_instance_counts_on_its_own_and_nothing_fails() {
    let env = TestEnv::start().await;
    let budget = ("KURZ_SCAN_BUDGET", "20");
    let a = spawn_redirect(&env, &[TRUST_LOOPBACK, budget]).await;
    let b = spawn_redirect(&env, &[TRUST_LOOPBACK, budget]).await;
    env.redis.stop().await;

    let statuses = scan(&[&a, &b], 60, |_| Some(SCANNER.to_owned())).await;

    assert!(
        statuses.iter().all(|s| [404, 429].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(
        misses_before_throttling(&statuses),
        40,
        "20 per instance: {statuses:?}"
    );
    assert!(statuses[40..].iter().all(|s| *s == 429));
    let metrics = scrape(a.url("").trim_end_matches('/')).await;
    assert_eq!(
        metrics.sum(names::RATELIMIT_FALLBACK, &[]),
        2.0,
        "both instances"
    );
}

#[tokio::test]
async fn following_a_live_link_again_and_again_never_throttles() {
    let env = TestEnv::start().await;
    insert(&env, "popular", "https://example.com/p", None).await;
    // Every request past the first goes to Redis, not only to memory.
    let app = spawn_redirect(
        &env,
        &[("KURZ_SCAN_BUDGET", "20"), ("KURZ_LOCAL_CACHE_TTL_MS", "1")],
    )
    .await;

    for _ in 0..60 {
        assert_eq!(get(&app, "/popular", None).await.status(), 302);
    }

    assert!(scan_keys(&env).await.is_empty(), "no miss was counted");
}

#[tokio::test]
async fn paths_that_can_never_be_codes_do_not_count_but_are_refused_once_throttled() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[("KURZ_SCAN_BUDGET", "3")]).await;
    let never_codes = ["/", "/favicon.ico", "/robots.txt", "/a/b", "/ab"];

    for _ in 0..5 {
        for path in never_codes {
            assert_eq!(get(&app, path, None).await.status(), 404, "{path}");
        }
    }
    assert!(scan_keys(&env).await.is_empty());
    let statuses = scan(&[&app], 4, |_| None).await;

    assert_eq!(statuses, [404, 404, 404, 429]);
    assert_eq!(get(&app, "/favicon.ico", None).await.status(), 429);
    assert_eq!(
        get(&app, "/healthz", None).await.status(),
        200,
        "probes are not codes"
    );
}

#[tokio::test]
async fn a_scan_budget_of_zero_switches_scan_resistance_off() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[("KURZ_SCAN_BUDGET", "0")]).await;

    let statuses = scan(&[&app], 30, |_| None).await;

    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    assert!(scan_keys(&env).await.is_empty());
}
