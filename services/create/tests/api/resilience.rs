//! The degradation table of the README, one test per row: faults are injected for real (a
//! TCP proxy that resets, blackholes or delays, servers stopped and restarted) and the tests
//! assert what users see and that services recover without a restart.

use std::time::Duration;

use deadpool_redis::redis;
use kurz_repository::Scope;
use kurz_testkit::{Fault, FaultProxy, RunningApp, ShutdownMode, TestEnv, http_client_with_key};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, RETRY_AFTER};
use serde_json::{Value, json};

use crate::helpers::{
    Stack, UNLIMITED, eventually, post_link, spawn_create, spawn_redirect_with, worker,
};

/// Tight bounds, so faults show within a second: a request-path call gives up after
/// 300 + 300 + 500 ms, and three availability failures in a row open the breaker for 1 s.
/// The in-process cache keeps answers for a millisecond only, so what these tests see is
/// Redis and PostgreSQL, not memory.
const TIGHT: [(&str, &str); 6] = [
    ("KURZ_LOCAL_CACHE_TTL_MS", "1"),
    ("KURZ_DATABASE_POOL_TIMEOUT_MS", "300"),
    ("KURZ_DATABASE_CONNECT_TIMEOUT_MS", "300"),
    ("KURZ_DATABASE_STATEMENT_TIMEOUT_MS", "500"),
    ("KURZ_BREAKER_FAILURES", "3"),
    ("KURZ_BREAKER_BACKOFF_SECS", "1"),
];

/// Both services reach PostgreSQL and Redis through fault proxies.
struct Faulty {
    env: TestEnv,
    pg: FaultProxy,
    redis: FaultProxy,
    redirect: RunningApp,
    create: RunningApp,
    client: reqwest::Client,
}

impl Faulty {
    async fn start() -> Self {
        let env = TestEnv::start().await;
        worker(&env)
            .await
            .add_keys(2_000)
            .await
            .expect("fill the pool");
        let (pg, redis) = (env.postgres_proxy().await, env.redis_proxy().await);
        let (db_url, redis_url) = (env.database_url_via(&pg), env.redis_url_via(&redis));
        let mut vars = TIGHT.to_vec();
        vars.extend([
            ("KURZ_DATABASE_URL", db_url.as_str()),
            ("KURZ_REDIS_URL", redis_url.as_str()),
        ]);
        let redirect = spawn_redirect_with(&env, &vars).await;
        let create = spawn_create(&env, &redirect, &vars).await;
        let admin = env.api_key("ops", &[Scope::Admin], Some(UNLIMITED)).await;
        Self {
            env,
            pg,
            redis,
            redirect,
            create,
            client: http_client_with_key(&admin.key),
        }
    }

    async fn create_link(&self, url: &str) -> Value {
        let response = post_link(&self.client, &self.create, &json!({ "url": url })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    async fn get(&self, app: &RunningApp, path: &str) -> reqwest::Response {
        self.client
            .get(app.url(path))
            .send()
            .await
            .expect("answered")
    }

    async fn breaker(&self, app: &RunningApp) -> String {
        let body: Value = self.get(app, "/readyz").await.json().await.expect("json");
        body["breaker"].as_str().expect("breaker").to_owned()
    }

    /// Requests unknown codes until the redirect's breaker opens (bounded).
    async fn trip_redirect_breaker(&self) {
        for i in 0..20 {
            if self.breaker(&self.redirect).await == "open" {
                return;
            }
            let response = self.get(&self.redirect, &format!("/trip{i:03}")).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        panic!("the breaker never opened");
    }
}

#[tokio::test]
async fn redis_refusing_or_blackholed_redirects_are_served_from_postgres_and_creates_work() {
    let stack = Faulty::start().await;
    let link = stack.create_link("https://example.com/r").await;
    let code = link["code"].as_str().expect("code");

    for fault in [Fault::Reset, Fault::Blackhole] {
        stack.redis.set(fault);

        let redirect = stack.get(&stack.redirect, &format!("/{code}")).await;
        assert_eq!(redirect.status(), StatusCode::FOUND, "{fault:?}");
        assert_eq!(redirect.headers()[LOCATION], "https://example.com/r");
        let created = post_link(
            &stack.client,
            &stack.create,
            &json!({ "url": "https://example.com/n" }),
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED, "{fault:?}");
        let readyz: Value = stack
            .get(&stack.redirect, "/readyz")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(readyz["status"], "degraded");
    }

    stack.redis.restore();
    eventually("the cache is used again", || async {
        let body: Value = stack
            .get(&stack.redirect, "/readyz")
            .await
            .json()
            .await
            .expect("json");
        body["status"] == "ready"
    })
    .await;
}

#[tokio::test]
async fn the_key_pool_worker_does_not_need_redis() {
    let env = TestEnv::start().await;
    env.redis.stop().await;

    let outcome = worker(&env).await.refill_once().await;

    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn after_flushall_creates_and_redirects_answer_the_same() {
    let stack = Faulty::start().await;
    let before = stack.create_link("https://example.com/f").await;
    let mut redis = stack.env.redis_conn().await;

    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");

    let code = before["code"].as_str().expect("code");
    assert_eq!(
        stack
            .get(&stack.redirect, &format!("/{code}"))
            .await
            .headers()[LOCATION],
        "https://example.com/f"
    );
    let after = stack.create_link("https://example.com/g").await;
    let code = after["code"].as_str().expect("code");
    assert_eq!(
        stack
            .get(&stack.redirect, &format!("/{code}"))
            .await
            .headers()[LOCATION],
        "https://example.com/g"
    );
}

#[tokio::test]
async fn postgres_down_cached_links_still_redirect_uncached_fail_fast_and_all_recover() {
    let stack = Faulty::start().await;
    let cached = stack.create_link("https://example.com/cached").await;
    let cached_path = format!("/{}", cached["code"].as_str().expect("code"));
    let uncached = stack.create_link("https://example.com/uncached").await;
    let uncached_path = format!("/{}", uncached["code"].as_str().expect("code"));
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("DEL")
        .arg(format!(
            "kurz:link:{}",
            uncached["code"].as_str().expect("code")
        ))
        .query_async::<()>(&mut redis)
        .await
        .expect("DEL");

    stack.pg.set(Fault::Blackhole);
    stack.trip_redirect_breaker().await;

    assert_eq!(
        stack.get(&stack.redirect, &cached_path).await.status(),
        StatusCode::FOUND,
        "cached links are served as normal"
    );
    // Once open, the breaker answers without waiting: a client allowing less than one
    // database deadline (1.1 s) still gets its 503.
    let fast = stack
        .client
        .get(stack.redirect.url(&uncached_path))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    let fast = fast.expect("answered well inside one database deadline");
    assert_eq!(fast.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(fast.headers().contains_key(RETRY_AFTER));
    // The redirect instance stays ready (degraded): it still serves its cached links, so a
    // load balancer must keep it. The create instance can do nothing without PostgreSQL.
    let readyz = stack.get(&stack.redirect, "/readyz").await;
    assert_eq!(readyz.status(), StatusCode::OK);
    let body: Value = readyz.json().await.expect("json");
    assert_eq!(
        (&body["status"], &body["postgres"]),
        (&json!("degraded"), &json!("down"))
    );
    let readyz = stack.get(&stack.create, "/readyz").await;
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);

    stack.pg.restore();

    eventually("the redirect recovers by itself", || async {
        stack.get(&stack.redirect, &uncached_path).await.status() == StatusCode::FOUND
    })
    .await;
    assert_eq!(stack.breaker(&stack.redirect).await, "closed");
}

#[tokio::test]
async fn postgres_down_creates_get_503_with_retry_after_then_recover() {
    let stack = Faulty::start().await;
    stack.create_link("https://example.com/warm").await;

    stack.pg.set(Fault::Reset);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = stack
            .client
            .post(stack.create.url("/api/v1/links"))
            .json(&json!({ "url": "https://example.com/x", "alias": format!("down{i}") }))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .expect("answered within the database deadline");
        assert!(response.headers().contains_key(RETRY_AFTER));
        statuses.push(response.status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(stack.breaker(&stack.create).await, "open");

    stack.pg.restore();

    eventually("creates recover by themselves", || async {
        post_link(
            &stack.client,
            &stack.create,
            &json!({ "url": "https://example.com/back" }),
        )
        .await
        .status()
            == StatusCode::CREATED
    })
    .await;
}

#[tokio::test]
async fn postgres_slow_cached_links_are_unaffected_and_timeouts_open_the_breaker() {
    let stack = Faulty::start().await;
    let cached = stack.create_link("https://example.com/slowcached").await;
    let cached_path = format!("/{}", cached["code"].as_str().expect("code"));

    stack.pg.set(Fault::Latency(Duration::from_secs(3)));

    assert_eq!(
        stack.get(&stack.redirect, &cached_path).await.status(),
        StatusCode::FOUND
    );
    let create = stack
        .client
        .post(stack.create.url("/api/v1/links"))
        .json(&json!({ "url": "https://example.com/slow", "alias": "slow1" }))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("503 within the create's deadline, not after the 3 s of latency");
    assert_eq!(create.status(), StatusCode::SERVICE_UNAVAILABLE);
    stack.trip_redirect_breaker().await;
}

#[tokio::test]
async fn postgres_restarted_every_service_recovers_by_itself() {
    let stack = Stack::start(1, 500).await;
    let before: Value = stack.create_link("https://example.com/pre").await;
    let worker = worker(&stack.env).await;

    stack.env.postgres.stop(ShutdownMode::Fast).await;
    stack.env.postgres.restart().await;

    // Redirect: a read, retried over the pool's dead connections, so no failure shows.
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");
    let followed = stack
        .follow(before["short_url"].as_str().expect("url"))
        .await;
    assert_eq!(followed.status(), StatusCode::FOUND);
    // Create: an insert is not retried, so a dead pooled connection may fail one request.
    eventually("creates work again", || async {
        stack
            .post(&json!({ "url": "https://example.com/post" }))
            .await
            .status()
            == StatusCode::CREATED
    })
    .await;
    // Keypool: its next step works.
    assert!(worker.refill_once().await.is_ok());
}

#[tokio::test]
async fn the_key_pool_worker_backs_off_while_postgres_is_down_and_resumes() {
    let env = TestEnv::start().await;
    let settings = kurz_keypool::Settings::from_source(
        &env.source()
            .with("KURZ_POOL_LOW_WATERMARK", "100")
            .with("KURZ_POOL_HIGH_WATERMARK", "500")
            .with("KURZ_POOL_CHECK_INTERVAL_MS", "100"),
    )
    .expect("valid settings");
    let worker = kurz_keypool::Worker::build(&settings)
        .await
        .expect("worker");
    env.postgres.stop(ShutdownMode::Immediate).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;

    env.postgres.restart().await;

    let sql = env.sql().await;
    eventually("the worker refilled after the restart", || async {
        let n: i64 = sql
            .query_one("SELECT count(*) FROM key_pool", &[])
            .await
            .expect("count")
            .get(0);
        n == 500
    })
    .await;
    let _ = stop.send(());
    running.await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_returns_unused_keys() {
    let stack = Faulty::start().await;
    stack.create_link("https://example.com/first").await;
    let issued_before: i64 = stack
        .env
        .sql()
        .await
        .query_one("SELECT count(*) FROM issued_codes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(issued_before, 1_000, "one batch claimed, one key used");
    // Slow enough that the request is still waiting on PostgreSQL when the stop begins, and
    // fast enough to fit the 1.1 s deadline even on a pooled connection that has not prepared
    // the insert yet: prepare and execute are two round trips, 2 x 2 x 150 ms. At 300 ms a
    // way, that case took 1.2 s and answered 503.
    stack.pg.set(Fault::Latency(Duration::from_millis(150)));

    let in_flight = {
        let (client, url) = (stack.client.clone(), stack.create.url("/api/v1/links"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "url": "https://example.com/in-flight" }))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Faulty {
        env, pg, create, ..
    } = stack;
    let stopped = create.stop().await;

    assert!(stopped.is_ok(), "clean exit: {stopped:?}");
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::CREATED);
    pg.restore();
    let sql = env.sql().await;
    let links: i64 = sql
        .query_one("SELECT count(*) FROM links", &[])
        .await
        .expect("count")
        .get(0);
    let issued: i64 = sql
        .query_one("SELECT count(*) FROM issued_codes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(links, 2);
    assert_eq!(issued, 2, "the 998 unused keys went back to the pool");
    let pooled: i64 = sql
        .query_one("SELECT count(*) FROM key_pool", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pooled, 1_998);
}

#[tokio::test]
async fn sigterm_stops_the_redirect_after_its_in_flight_requests() {
    let stack = Faulty::start().await;
    let link = stack.create_link("https://example.com/inflight").await;
    let path = format!("/{}", link["code"].as_str().expect("code"));
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");
    // One lookup first, so the delayed one below is a single round trip on a warm
    // connection with its statement prepared, inside the 1.1 s database deadline.
    assert_eq!(
        stack.get(&stack.redirect, &path).await.status(),
        StatusCode::FOUND
    );
    let key = format!("kurz:link:{}", &path[1..]);
    eventually("the warm-up's cache fill landed", || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<bool>(&mut redis)
                .await
                .expect("EXISTS")
        }
    })
    .await;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut redis)
        .await
        .expect("DEL");
    stack.pg.set(Fault::Latency(Duration::from_millis(300)));

    let in_flight = {
        let (client, url) = (stack.client.clone(), stack.redirect.url(&path));
        tokio::spawn(async move { client.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Faulty { redirect, .. } = stack;
    let stopped = redirect.stop().await;

    assert!(stopped.is_ok(), "clean exit: {stopped:?}");
    let response = in_flight.await.expect("task").expect("answered");
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn redis_restarted_the_pools_reconnect_and_the_cache_is_used_again() {
    let stack = Stack::start(1, 100).await;
    let link: Value = stack.create_link("https://example.com/rr").await;
    let code = link["code"].as_str().expect("code").to_owned();

    stack.env.redis.stop().await;
    stack.env.redis.restart().await;

    // The first uses of dead connections may fail (and count as misses); the pool replaces
    // them, and the redirect fills the restarted, empty Redis again.
    eventually("the cache is filled again", || async {
        stack.follow(link["short_url"].as_str().expect("url")).await;
        let mut redis = stack.env.redis_conn().await;
        redis::cmd("EXISTS")
            .arg(format!("kurz:link:{code}"))
            .query_async::<bool>(&mut redis)
            .await
            .expect("EXISTS")
    })
    .await;
}

#[tokio::test]
async fn stopping_the_key_pool_worker_finishes_its_batch_and_never_leaves_half_of_one() {
    let env = TestEnv::start().await;
    let settings = kurz_keypool::Settings::from_source(
        &env.source()
            .with("KURZ_POOL_LOW_WATERMARK", "1000")
            .with("KURZ_POOL_HIGH_WATERMARK", "200000"),
    )
    .expect("valid settings");
    let worker = kurz_keypool::Worker::build(&settings)
        .await
        .expect("worker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the worker stops")
        .expect("cleanly");

    let n: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM key_pool", &[])
        .await
        .expect("count")
        .get(0);
    assert!(
        n == 0 || n == 200_000,
        "all of the batch or none of it, got {n}"
    );
}
