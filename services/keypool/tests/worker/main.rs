//! The key-pool worker against real PostgreSQL.

use std::collections::HashSet;

use kurz_keypool::{RefillOutcome, Settings, Worker};
use kurz_repository::{KeyRepository, RepoError};
use kurz_testkit::TestEnv;

mod admin;

async fn worker(env: &TestEnv, low: u64, high: u64) -> Worker {
    let source = env
        .source()
        .with("KURZ_POOL_LOW_WATERMARK", low.to_string())
        .with("KURZ_POOL_HIGH_WATERMARK", high.to_string());
    let settings = Settings::from_source(&source).expect("valid settings");
    Worker::build(&settings).await.expect("worker starts")
}

#[tokio::test]
async fn a_refill_step_fills_a_low_pool_up_to_the_high_watermark() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 500, 2_000).await;

    let outcome = worker.refill_once().await.expect("refill");

    let RefillOutcome::Refilled {
        depth_before,
        report,
    } = outcome
    else {
        panic!("expected a refill, got {outcome:?}");
    };
    assert_eq!(depth_before, 0);
    assert_eq!(report.inserted, 2_000);
    assert_eq!(env.count("SELECT count(*) FROM key_pool").await, 2_000);
    let well_formed = env
        .count("SELECT count(*) FROM key_pool WHERE code ~ '^[A-Za-z0-9]{7}$'")
        .await;
    assert_eq!(well_formed, 2_000, "keys are 7 characters of base62");
}

#[tokio::test]
async fn a_refill_step_leaves_a_pool_above_the_low_watermark_alone() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 500, 2_000).await;
    worker.add_keys(600).await.expect("seed");

    let outcome = worker.refill_once().await.expect("refill");

    assert_eq!(outcome, RefillOutcome::Sufficient);
    assert_eq!(env.count("SELECT count(*) FROM key_pool").await, 600);
}

#[tokio::test]
async fn a_colliding_chunk_skips_keys_already_pooled_issued_or_repeated() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 10, 20).await;
    env.sql()
        .await
        .batch_execute(
            "INSERT INTO issued_codes (code) VALUES ('Issued1');
             INSERT INTO key_pool (code) VALUES ('Pooled1');",
        )
        .await
        .expect("arrange");

    // Both chunks collide (with the pool, then with the first chunk), so both take the path
    // that skips: issued codes too.
    let chunks = [
        "Issued1\nPooled1\nFresh01\n".to_owned(),
        "Fresh01\nFresh02\n".to_owned(),
    ];
    let report = worker
        .repository()
        .add_fresh_keys(chunks.into_iter())
        .await
        .expect("add");

    assert_eq!(report.generated, 5);
    assert_eq!(report.inserted, 2, "only Fresh01 and Fresh02 are new");
    assert_eq!(pooled(&env).await, ["Fresh01", "Fresh02", "Pooled1"]);
}

async fn pooled(env: &TestEnv) -> Vec<String> {
    env.sql()
        .await
        .query("SELECT code FROM key_pool ORDER BY code", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn fresh_keys_go_straight_in_and_only_a_colliding_chunk_is_inserted_again() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 10, 20).await;
    env.sql()
        .await
        .batch_execute("INSERT INTO key_pool (code) VALUES ('Pooled1');")
        .await
        .expect("arrange");

    // The second chunk collides with the pool and the third repeats a key: both fail their
    // plain insert, are rolled back to their savepoint and are inserted again, skipping.
    let chunks = [
        "Fresh01\nFresh02\n".to_owned(),
        "Pooled1\nFresh03\n".to_owned(),
        "Fresh04\nFresh04\n".to_owned(),
    ];
    let report = worker
        .repository()
        .add_fresh_keys(chunks.into_iter())
        .await
        .expect("add");

    assert_eq!(report.generated, 6);
    assert_eq!(report.inserted, 4, "Fresh01 to Fresh04 are new");
    assert_eq!(
        pooled(&env).await,
        ["Fresh01", "Fresh02", "Fresh03", "Fresh04", "Pooled1"]
    );
}

#[tokio::test]
async fn a_pooled_key_that_was_already_issued_is_never_handed_out() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 10, 20).await;
    // The fast path of a refill does not look at issued_codes, so this can happen (once in
    // trillions); the claim is what keeps such a key from being handed out twice.
    env.sql()
        .await
        .batch_execute(
            "INSERT INTO issued_codes (code) VALUES ('Issued1');
             INSERT INTO key_pool (code) VALUES ('Issued1'), ('Fresh01');",
        )
        .await
        .expect("arrange");

    let claimed = worker.repository().claim_keys(10).await.expect("claim");

    assert_eq!(claimed, ["Fresh01"]);
    assert!(
        pooled(&env).await.is_empty(),
        "the issued key left the pool"
    );
}

#[tokio::test]
async fn a_million_keys_refill_in_one_step_and_report_their_rate() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 999_999, 1_000_000).await;

    let outcome = worker.refill_once().await.expect("refill");

    let RefillOutcome::Refilled { report, .. } = outcome else {
        panic!("expected a refill, got {outcome:?}");
    };
    println!(
        "refilled {} keys in {:.2} s: {:.0} keys/s (debug build)",
        report.inserted,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    assert_eq!(report.generated, 1_000_000);
    // Collisions among a million random 7-character keys are possible but vanishingly rare.
    assert!(report.inserted >= 999_990, "{report:?}");
    assert!(report.rate() > 0.0);
    assert_eq!(
        env.count("SELECT count(*) FROM key_pool").await,
        report.inserted as i64
    );
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_a_key_twice() {
    let env = TestEnv::start().await;
    let worker = worker(&env, 10, 20).await;
    worker.add_keys(5_000).await.expect("seed");

    let claimers = (0..8).map(|_| {
        let repo = worker.repository().clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = repo.claim_keys(97).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("claimer"));
    }

    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 5_000, "every pooled key was claimed");
    assert_eq!(distinct.len(), all.len(), "no key was claimed twice");
    assert_eq!(env.count("SELECT count(*) FROM key_pool").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM issued_codes").await, 5_000);
}

#[tokio::test]
async fn the_worker_refuses_to_start_on_an_older_schema() {
    let env = TestEnv::start().await;
    env.postgres
        .client("postgres")
        .await
        .batch_execute("CREATE DATABASE unmigrated")
        .await
        .expect("create");
    let source = env
        .source()
        .with("KURZ_DATABASE_URL", env.postgres.url("unmigrated"));
    let settings = Settings::from_source(&source).expect("valid settings");

    let err = Worker::build(&settings).await.expect_err("must refuse");

    assert!(
        matches!(err, RepoError::SchemaOutdated { found: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("kurz-keypool migrate"), "{err}");
}

#[tokio::test]
async fn migrate_applies_to_an_empty_database_and_is_idempotent() {
    let env = TestEnv::start().await;
    env.postgres
        .client("postgres")
        .await
        .batch_execute("CREATE DATABASE fresh")
        .await
        .expect("create");
    // As deployed behind PgBouncer: the worker through it, the migrations direct.
    let source = env
        .source()
        .with("KURZ_DATABASE_URL", env.pgbouncer.url("fresh"))
        .with("KURZ_DATABASE_DIRECT_URL", env.postgres.url("fresh"));
    let settings = Settings::from_source(&source).expect("valid settings");

    kurz_repository::postgres::migrate(&settings.database)
        .await
        .expect("first migrate");
    kurz_repository::postgres::migrate(&settings.database)
        .await
        .expect("second migrate");

    Worker::build(&settings)
        .await
        .expect("the worker accepts the migrated schema");
}

#[tokio::test]
async fn the_worker_serves_metrics_on_its_own_port_and_they_follow_refills() {
    use kurz_telemetry::metrics::names;
    use kurz_testkit::metrics::scrape;

    let env = TestEnv::start().await;
    let source = env
        .source()
        .with("KURZ_POOL_LOW_WATERMARK", "500")
        .with("KURZ_POOL_HIGH_WATERMARK", "2000")
        .with("KURZ_POOL_CHECK_INTERVAL_MS", "50");
    let settings = kurz_keypool::Settings::from_source(&source).expect("valid settings");
    let app = kurz_keypool::Application::build(&settings)
        .await
        .expect("worker starts");
    let app =
        kurz_testkit::RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));
    let base = app.url("");
    let base = base.trim_end_matches('/');

    // The loop fills the empty pool at once; wait for the first refill to show.
    let mut exposition = scrape(base).await;
    for _ in 0..200 {
        if exposition.sum(names::KEYS_REFILLED, &[]) >= 2_000.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        exposition = scrape(base).await;
    }
    assert_eq!(
        exposition.sum(names::KEYS_REFILLED, &[]),
        2_000.0,
        "{}",
        exposition.0
    );
    exposition.assert_has_all(&[
        names::KEYS_REFILLED,
        names::REFILL_DURATION,
        names::KEYPOOL_DEPTH,
        names::BREAKER_STATE,
        names::DB_POOL_CONNECTIONS,
        names::DB_POOL_MAX,
        names::DB_POOL_WAIT,
    ]);

    // Drain below the low watermark: the next refill adds what is missing, and the counter
    // moves by exactly that.
    env.sql()
        .await
        .batch_execute("DELETE FROM key_pool WHERE id IN (SELECT id FROM key_pool LIMIT 1600)")
        .await
        .expect("drain");
    for _ in 0..200 {
        exposition = scrape(base).await;
        if exposition.sum(names::KEYS_REFILLED, &[]) >= 3_600.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(exposition.sum(names::KEYS_REFILLED, &[]), 3_600.0);
    assert_eq!(
        exposition.sum("kurz_refill_duration_seconds_count", &[]),
        2.0,
        "two refills"
    );
    app.stop().await.expect("stops");
}
