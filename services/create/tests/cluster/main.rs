//! Every Redis-backed behaviour on a real six-node Redis Cluster (three masters, three
//! replicas, on loopback), and a master killed under load.
//!
//! A cluster takes about two seconds to start (a new master waits that long before it serves),
//! so the behaviours share one: `every_redis_backed_behaviour_works_on_a_redis_cluster` runs
//! them one after another on one stack, each named in its panic. The failover test has a
//! cluster of its own, since it kills a node, and runs alone (`.config/nextest.toml`): a
//! starved node could miss the 500 ms node timeout and fail over unasked.

// The API suite's helpers (spawning services, the key-pool worker); this binary uses a few.
#[path = "../api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use helpers::{spawn_create, spawn_redirect_with, worker};
use kurz_repository::Scope;
use kurz_repository::clicks::stream_key;
use kurz_repository::invalidation::CHANNEL;
use kurz_testkit::{RunningApp, TestEnv, http_client, http_client_with_key, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A per-minute limit no scenario reaches.
const UNLIMITED: u32 = 1_000_000;
/// Scenarios that count per client IP send `X-Forwarded-For` from a trusted loopback peer,
/// each its own address, so one scenario's misses never spend another's budget.
const TRUST_LOOPBACK: (&str, &str) = ("KURZ_TRUSTED_PROXIES", "127.0.0.1/32");
/// A desktop browser's User-Agent: its clicks count as a person's.
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                       Chrome/126.0.0.0 Safari/537.36";
/// Anonymous creates a minute per client IP, small enough to reach.
const ANONYMOUS_LIMIT: usize = 3;

/// PostgreSQL (through PgBouncer), a Redis Cluster, two redirect instances, two create
/// instances and the analytics worker, all on the cluster.
#[allow(missing_debug_implementations)] // the analytics worker is not `Debug`
struct Stack {
    env: TestEnv,
    redirects: [RunningApp; 2],
    creates: [RunningApp; 2],
    worker: kurz_analytics::Worker,
    /// Sends an admin key of the account `ops` with no practical rate limit.
    client: reqwest::Client,
}

impl Stack {
    /// `redirect_extra` goes to both redirect instances.
    async fn start(redirect_extra: &[(&str, &str)]) -> Self {
        let env = TestEnv::start_with_cluster().await;
        worker(&env).await.add_keys(2_000).await.expect("keys");
        let redirects = [
            redirect(&env, redirect_extra).await,
            redirect(&env, redirect_extra).await,
        ];
        let create_extra = [
            TRUST_LOOPBACK,
            ("KURZ_ANONYMOUS_CREATE", "true"),
            ("KURZ_ANONYMOUS_RATE_LIMIT_PER_MINUTE", "3"),
        ];
        let creates = [
            spawn_create(&env, &redirects[0], &create_extra).await,
            spawn_create(&env, &redirects[0], &create_extra).await,
        ];
        let worker = analytics(&env).await;
        let admin = env.api_key("ops", &[Scope::Admin], Some(UNLIMITED)).await;
        let client = http_client_with_key(&admin.key);
        Self {
            env,
            redirects,
            creates,
            worker,
            client,
        }
    }

    /// Creates a link to `url` through the first create instance; its code.
    async fn create_link(&self, url: &str) -> String {
        let response = self
            .client
            .post(self.creates[0].url("/api/v1/links"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .expect("create request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["code"].as_str().expect("code").to_owned()
    }

    async fn cached(&self, code: &str) -> Option<String> {
        let mut conn = self.env.cluster_conn().await;
        conn.get(format!("kurz:link:{code}"))
            .await
            .expect("GET on the cluster")
    }
}

/// A redirect instance that trusts the loopback peer's `X-Forwarded-For`, with `extra`.
async fn redirect(env: &TestEnv, extra: &[(&str, &str)]) -> RunningApp {
    let mut settings = vec![TRUST_LOOPBACK];
    settings.extend_from_slice(extra);
    spawn_redirect_with(env, &settings).await
}

async fn analytics(env: &TestEnv) -> kurz_analytics::Worker {
    analytics_as(env, "cluster", &[]).await
}

/// The analytics worker as consumer `consumer`, with `extra` settings.
async fn analytics_as(
    env: &TestEnv,
    consumer: &str,
    extra: &[(&str, &str)],
) -> kurz_analytics::Worker {
    let mut source = env
        .source()
        .with("KURZ_ANALYTICS_CONSUMER", consumer)
        .with("KURZ_ANALYTICS_BLOCK_MS", "50");
    for (k, v) in extra {
        source = source.with(k, *v);
    }
    let settings = kurz_analytics::Settings::from_source(&source).expect("valid settings");
    kurz_analytics::Worker::build(&settings)
        .await
        .expect("the analytics worker starts")
}

/// `GET /{code}` on `app` as `client` (an `X-Forwarded-For` address).
async fn follow(app: &RunningApp, code: &str, client: &str) -> reqwest::Response {
    http_client()
        .get(app.url(&format!("/{code}")))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("redirect request")
}

#[tokio::test]
async fn every_redis_backed_behaviour_works_on_a_redis_cluster() {
    // A long in-process TTL: a deleted link can then only leave a redirect instance's memory
    // through the sharded invalidation.
    let mut stack = Stack::start(&[("KURZ_LOCAL_CACHE_TTL_MS", "600000")]).await;
    links_are_cached_in_the_cluster(&stack).await;
    a_delete_reaches_both_redirect_instances_over_sharded_pub_sub(&stack).await;
    a_revoked_key_fails_on_both_create_instances_over_sharded_pub_sub(&stack).await;
    a_bulk_create_warms_the_cache_across_every_slot_it_touches(&stack).await;
    the_anonymous_create_limit_is_shared_by_both_create_instances(&stack).await;
    a_keys_limit_is_shared_by_both_create_instances(&stack).await;
    the_scan_budget_is_shared_by_both_redirect_instances(&stack).await;
    clicks_reach_the_analytics_worker_through_the_sharded_streams(&mut stack).await;
    readiness_says_ready(&stack).await;
}

async fn links_are_cached_in_the_cluster(stack: &Stack) {
    let code = stack.create_link("https://example.com/cached").await;
    let response = follow(&stack.redirects[0], &code, "192.0.2.1").await;
    assert_eq!(response.status(), StatusCode::FOUND, "links_are_cached");
    assert_eq!(
        response.headers()["location"],
        "https://example.com/cached",
        "links_are_cached"
    );
    let entry = stack
        .cached(&code)
        .await
        .expect("links_are_cached: an entry");
    assert!(
        entry.ends_with("|https://example.com/cached"),
        "links_are_cached: {entry}"
    );
}

async fn a_delete_reaches_both_redirect_instances_over_sharded_pub_sub(stack: &Stack) {
    let code = stack.create_link("https://example.com/deleted").await;
    for app in &stack.redirects {
        assert_eq!(
            follow(app, &code, "192.0.2.2").await.status(),
            StatusCode::FOUND,
            "invalidation: served before the delete"
        );
    }
    let deleted = stack
        .client
        .delete(stack.creates[1].url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("delete request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    within(
        Duration::from_secs(1),
        "invalidation: both instances forget the deleted link",
        || async {
            let mut gone = true;
            for app in &stack.redirects {
                gone &= follow(app, &code, "192.0.2.2").await.status() == StatusCode::NOT_FOUND;
            }
            gone
        },
    )
    .await;
}

async fn a_revoked_key_fails_on_both_create_instances_over_sharded_pub_sub(stack: &Stack) {
    let key = stack
        .env
        .api_key("revoked", &[Scope::LinksRead], None)
        .await;
    let client = http_client_with_key(&key.key);
    let probe = |i: usize| {
        client
            .get(stack.creates[i].url("/api/v1/links/nothere"))
            .send()
    };
    // Both instances have verified the key, and keep the verdict in memory.
    for i in 0..2 {
        assert_eq!(
            probe(i).await.expect("get").status(),
            StatusCode::NOT_FOUND,
            "revocation: the key works before"
        );
    }
    let revoked = stack
        .client
        .delete(stack.creates[0].url(&format!("/api/v1/keys/{}", key.key_id)))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    // Only the announcement on kurz:invalidate:auth tells the other instance (its own
    // cache of verdicts would keep the key for longer).
    within(
        Duration::from_secs(1),
        "revocation: the key fails on both instances",
        || async {
            let mut refused = true;
            for i in 0..2 {
                refused &= probe(i).await.expect("get").status() == StatusCode::UNAUTHORIZED;
            }
            refused
        },
    )
    .await;
}

async fn a_bulk_create_warms_the_cache_across_every_slot_it_touches(stack: &Stack) {
    let items: Vec<Value> = (0..40)
        .map(|i| json!({ "url": format!("https://example.com/bulk/{i}") }))
        .collect();
    let response = stack
        .client
        .post(stack.creates[0].url("/api/v1/links/bulk"))
        .json(&json!({ "links": items }))
        .send()
        .await
        .expect("bulk request");
    assert_eq!(response.status(), StatusCode::OK, "bulk");
    let body: Value = response.json().await.expect("json");
    let codes: Vec<String> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["link"]["code"]
                .as_str()
                .expect("bulk: created")
                .to_owned()
        })
        .collect();
    assert_eq!(codes.len(), 40);
    let mut conn = stack.env.cluster_conn().await;
    let mut slots = HashSet::new();
    for code in &codes {
        let key = format!("kurz:link:{code}");
        let entry: Option<String> = conn.get(&key).await.expect("GET");
        assert!(entry.is_some(), "bulk: {key} is cached");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        slots.insert(slot / 5461);
    }
    // Forty random codes land on every master: a pipeline of them would have failed.
    assert_eq!(slots.len(), 3, "bulk: keys on every master");
}

async fn the_anonymous_create_limit_is_shared_by_both_create_instances(stack: &Stack) {
    let client = http_client();
    let mut statuses = Vec::new();
    for i in 0..=ANONYMOUS_LIMIT {
        let response = client
            .post(stack.creates[i % 2].url("/api/v1/links"))
            .header("x-forwarded-for", "192.0.2.30")
            .json(&json!({ "url": format!("https://example.com/anonymous/{i}") }))
            .send()
            .await
            .expect("anonymous create");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 429],
        "rate limit: counted once across both instances"
    );
    let mut conn = stack.env.cluster_conn().await;
    let counted: bool = conn
        .exists("kurz:rl:{anon:192.0.2.30}")
        .await
        .expect("EXISTS");
    assert!(counted, "rate limit: the counter lives in the cluster");
}

async fn a_keys_limit_is_shared_by_both_create_instances(stack: &Stack) {
    let key = stack
        .env
        .api_key("limited", &[Scope::LinksWrite], Some(2))
        .await;
    let client = http_client_with_key(&key.key);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let response = client
            .post(stack.creates[i % 2].url("/api/v1/links"))
            .json(&json!({ "url": format!("https://example.com/limited/{i}") }))
            .send()
            .await
            .expect("create");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [201, 201, 429],
        "key limit: counted once across both"
    );
    let mut conn = stack.env.cluster_conn().await;
    let counted: bool = conn
        .exists(format!("kurz:rl:{{key:{}}}", key.key_id))
        .await
        .expect("EXISTS");
    assert!(counted, "key limit: the counter lives in the cluster");
}

async fn the_scan_budget_is_shared_by_both_redirect_instances(stack: &Stack) {
    const SCANNER: &str = "192.0.2.40";
    let mut statuses = Vec::new();
    for i in 0..150 {
        let code = kurz_repository::codes::generate_key(7);
        statuses.push(
            follow(&stack.redirects[i % 2], &code, SCANNER)
                .await
                .status()
                .as_u16(),
        );
    }
    let misses = statuses.iter().take_while(|s| **s == 404).count();
    assert!(
        (90..=110).contains(&misses),
        "scan budget: {misses} misses before the first 429"
    );
    assert!(
        statuses[misses..].iter().all(|s| *s == 429),
        "scan budget: throttled on both instances"
    );
}

async fn clicks_reach_the_analytics_worker_through_the_sharded_streams(stack: &mut Stack) {
    let code = stack.create_link("https://example.com/clicked").await;
    const CLICKS: usize = 12;
    // The earlier scenarios' clicks first (the redirect instances ship every 20 ms), so the
    // counts below are this scenario's alone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    loop {
        let outcome = stack.worker.process_once().await.expect("clicks: draining");
        if outcome.read == 0 && outcome.came_back == 0 {
            break;
        }
    }
    for i in 0..CLICKS {
        // A person's browser: the stored count is of human clicks.
        let response = http_client()
            .get(stack.redirects[i % 2].url(&format!("/{code}")))
            .header("x-forwarded-for", "192.0.2.50")
            .header("user-agent", BROWSER)
            .send()
            .await
            .expect("redirect request");
        assert_eq!(response.status(), StatusCode::FOUND, "clicks");
    }
    // Applied, whichever stream (and master) its batch went to, by a worker that then dies
    // before its XACKs: its entries stay pending in their streams.
    let mut applied = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while applied < CLICKS {
        assert!(
            std::time::Instant::now() < deadline,
            "clicks: only {applied} of {CLICKS} reached the worker"
        );
        applied += stack
            .worker
            .process_once_without_ack()
            .await
            .expect("clicks: a worker step")
            .applied;
    }
    // Another worker claims them (XAUTOCLAIM on each stream's node), finds them applied and
    // only acknowledges them.
    let mut claimer = analytics_as(
        &stack.env,
        "cluster-claimer",
        &[("KURZ_ANALYTICS_CLAIM_IDLE_MS", "1")],
    )
    .await;
    let mut duplicate = 0;
    while duplicate < CLICKS {
        assert!(
            std::time::Instant::now() < deadline,
            "clicks: only {duplicate} of {CLICKS} came back to the claimer"
        );
        let outcome = claimer
            .process_once()
            .await
            .expect("clicks: a claimer step");
        assert_eq!(outcome.applied, 0, "clicks: nothing applied twice");
        duplicate += outcome.duplicate;
    }
    let states = claimer.observe().await.expect("clicks: the groups' state");
    assert_eq!(states.len(), 8, "clicks: a state per stream");
    for state in states {
        let state = state.expect("clicks: every stream has its group");
        assert_eq!(state.pending, 0, "clicks: every entry acknowledged");
    }
    let stored = stack
        .env
        .count(&format!("SELECT clicks FROM links WHERE code = '{code}'"))
        .await;
    assert_eq!(stored, CLICKS as i64, "clicks: counted exactly once");
    // The batches went to more than one stream, so through more than one slot.
    let mut conn = stack.env.cluster_conn().await;
    let mut used = 0;
    for shard in 0..8 {
        let len: usize = conn.xlen(stream_key(shard)).await.expect("XLEN");
        used += usize::from(len > 0);
    }
    assert!(used >= 1, "clicks: entries in the cluster's streams");
}

async fn readiness_says_ready(stack: &Stack) {
    for app in stack.redirects.iter().chain(stack.creates.iter()) {
        let response = http_client()
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(response.status(), StatusCode::OK, "readiness");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "ready", "readiness: {body}");
        assert_eq!(body["redis"], "up", "readiness: {body}");
    }
}

/// Links the failover test follows, inserted as the create service stores them.
const LINKS: usize = 200;

// Two threads: the load, the services and the test's own calls to the cluster share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_and_nothing_answers_an_error() {
    // One redirect instance keeps nothing in memory (every request asks the cluster first),
    // another keeps answers for ten minutes, so only an invalidation can make it forget one.
    let stack = Stack::start(&[]).await;
    let env = &stack.env;
    let cluster = env.cluster.as_ref().expect("cluster");
    let sql = env.sql().await;
    sql.batch_execute(&format!(
        "INSERT INTO links (code, target_url) \
         SELECT 'fo' || lpad(i::text, 5, '0'), 'https://example.com/fo/' || i \
         FROM generate_series(1, {LINKS}) AS i; \
         INSERT INTO issued_codes (code) SELECT code FROM links WHERE code LIKE 'fo%';"
    ))
    .await
    .expect("seeding links");
    let forgetful = redirect(env, &[("KURZ_LOCAL_CACHE_TTL_MS", "1")]).await;
    let remembering = redirect(env, &[("KURZ_LOCAL_CACHE_TTL_MS", "600000")]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for worker in 0..8 {
        let (stop, answered, wrong) = (stop.clone(), answered.clone(), wrong.clone());
        let base = forgetful.url("/");
        load.push(tokio::spawn(async move {
            let client = http_client();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let n = i % LINKS + 1;
                i += 7;
                let response = client
                    .get(format!("{base}fo{n:05}"))
                    .header("x-forwarded-for", "192.0.2.60")
                    .send()
                    .await;
                let right = response.as_ref().is_ok_and(|r| {
                    r.status() == StatusCode::FOUND
                        && r.headers()["location"] == format!("https://example.com/fo/{n}").as_str()
                });
                answered.fetch_add(1, Ordering::Relaxed);
                if !right {
                    wrong.fetch_add(1, Ordering::Relaxed);
                    match response {
                        Ok(r) => eprintln!("a wrong answer for fo{n:05}: {}", r.status()),
                        Err(e) => eprintln!("no answer for fo{n:05}: {e}"),
                    }
                }
                // An answer that is ready at once must not keep the other tasks waiting.
                tokio::task::yield_now().await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    // The master of the invalidation channel's slot: its subscribers must move to the
    // replica, and its keys' cache entries and counters become unreachable for the window.
    let killed = cluster.master_of(CHANNEL).await;
    let before = answered.load(Ordering::Relaxed);
    cluster.kill(killed).await;
    cluster
        .await_failover(killed, Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load task");
    }
    let (answered, wrong) = (
        answered.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    assert!(
        answered > before + 100,
        "the load went on through the failover ({before} before, {answered} in all)"
    );
    assert_eq!(
        wrong, 0,
        "every redirect answered, and rightly, of {answered}"
    );

    // Invalidations resume: the remembering instance forgets a deleted link.
    let code = "fo00001";
    assert_eq!(follow(&remembering, code, "192.0.2.61").await.status(), 302);
    let deleted = stack
        .client
        .delete(stack.creates[0].url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    within(
        Duration::from_secs(3),
        "the remembering instance hears of the delete after the failover",
        || async { follow(&remembering, code, "192.0.2.61").await.status() == 404 },
    )
    .await;

    // Limits resume: misses are counted in the cluster again, on whichever master.
    let conn = env.cluster_conn().await;
    within(
        Duration::from_secs(3),
        "scan misses are counted in the cluster after the failover",
        || async {
            let mut conn = conn.clone();
            let code = kurz_repository::codes::generate_key(7);
            let _ = follow(&forgetful, &code, "192.0.2.62").await;
            conn.exists::<_, bool>("kurz:rl:{scan:192.0.2.62}")
                .await
                .unwrap_or(false)
        },
    )
    .await;
}
