//! PostgreSQL failing under the worker, and what `/metrics` shows.

use kurz_analytics::Application;
use kurz_testkit::{Fault, FaultProxy, RunningApp, TestEnv};

use crate::*;

#[tokio::test]
async fn while_postgres_is_down_nothing_is_acknowledged_and_counts_are_exact_after() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let proxy = env.postgres_proxy().await;
    let mut worker =
        worker_from(source(&env, "w1").with("KURZ_DATABASE_URL", env.database_url_via(&proxy)))
            .await;
    for shard in [0, 1, 0] {
        add(&env, shard, &click("promo")).await;
    }
    proxy.set(Fault::Reset);

    for _ in 0..3 {
        worker.process_once().await.expect_err("PostgreSQL is down");
    }
    assert_eq!(pending_everywhere(&env).await, 3, "nothing is acknowledged");
    // Arriving during the outage: read once the held batch is in.
    add(&env, 1, &click("promo")).await;
    assert_eq!(
        pending_everywhere(&env).await,
        3,
        "the held batch is retried, not a new one read"
    );
    proxy.restore();
    let committed = until_committed(&mut worker).await;
    let rest = drain(&mut worker).await;

    assert_eq!(committed.applied, 3);
    assert_eq!(rest.applied, 1);
    assert_eq!(clicks(&env, id).await, 4);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn the_metrics_endpoint_shows_outcomes_commits_lag_and_pending() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    add(&env, 0, &click("promo")).await;
    add(&env, 1, &click("nosuchcode")).await;
    let settings = Settings::from_source(&source(&env, "w1")).expect("valid settings");
    let app = Application::build(&settings).await.expect("starts");
    let running = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));

    kurz_testkit::eventually("the click is counted", || async {
        clicks(&env, id).await == 1 && pending_everywhere(&env).await == 0
    })
    .await;
    let base = running.url("");
    kurz_testkit::eventually("the gauges are sampled", || async {
        kurz_testkit::metrics::scrape(&base)
            .await
            .has(kurz_telemetry::metrics::names::ANALYTICS_PENDING)
    })
    .await;
    let metrics = kurz_testkit::metrics::scrape(&base).await;
    running.stop().await.expect("stops cleanly");

    use kurz_telemetry::metrics::names;
    metrics.assert_has_all(&[
        names::ANALYTICS_EVENTS,
        names::ANALYTICS_BATCH_COMMIT,
        names::ANALYTICS_STREAM_LAG,
        names::ANALYTICS_PENDING,
    ]);
    // Tests in this binary share the recorder: at least this test's entries are there.
    assert!(metrics.sum(names::ANALYTICS_EVENTS, &[("outcome", "applied")]) >= 1.0);
    assert!(metrics.sum(names::ANALYTICS_EVENTS, &[("outcome", "unknown_link")]) >= 1.0);
}

/// The worker `w1`, reaching Redis through a fault proxy.
async fn worker_via_redis_proxy(env: &TestEnv) -> (FaultProxy, Worker) {
    let proxy = env.redis_proxy().await;
    let worker =
        worker_from(source(env, "w1").with("KURZ_REDIS_URL", env.redis_url_via(&proxy))).await;
    (proxy, worker)
}

#[tokio::test]
async fn while_redis_is_down_reads_fail_and_resume_when_it_is_back() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let (proxy, mut worker) = worker_via_redis_proxy(&env).await;
    add(&env, 0, &click("promo")).await;
    proxy.set(Fault::Reset);

    let failed = worker.process_once().await.expect_err("Redis is down");
    assert_eq!(failed.stage(), "read");
    add(&env, 1, &click("promo")).await;
    proxy.restore();
    until_committed(&mut worker).await;
    drain(&mut worker).await;

    assert_eq!(clicks(&env, id).await, 2);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn entries_delivered_by_a_read_whose_reply_was_lost_are_read_back_after_it() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let (proxy, mut worker) = worker_via_redis_proxy(&env).await;
    // A first step finds its own pending list empty.
    drain(&mut worker).await;
    add(&env, 0, &click("promo")).await;
    // A read that reached Redis but whose reply never came back: the entry is delivered to w1.
    let mut conn = env.redis_conn().await;
    let keys: Vec<String> = (0..SHARDS).map(stream_key).collect();
    let ids = vec![">"; keys.len()];
    let options = redis::streams::StreamReadOptions::default().group(GROUP, "w1");
    let _: redis::streams::StreamReadReply = conn
        .xread_options(&keys, &ids, &options)
        .await
        .expect("XREADGROUP");
    proxy.set(Fault::Reset);
    worker.process_once().await.expect_err("Redis is down");
    proxy.restore();

    // Steps for a few seconds, well before the claim timeout (30 s) would hand the entry to
    // anyone; the first ones may still meet the broken connections.
    for _ in 0..100 {
        let _ = worker.process_once().await;
        if clicks(&env, id).await == 1 && pending_everywhere(&env).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    assert_eq!(clicks(&env, id).await, 1);
    assert_eq!(pending_everywhere(&env).await, 0);
}
