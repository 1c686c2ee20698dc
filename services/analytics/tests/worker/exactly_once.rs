//! Entries that come back after their commit count once: claimed by another worker, read
//! back by a restarted one, or claimed while their first worker could not commit.

use kurz_testkit::{Fault, TestEnv};

use crate::*;

/// Adds `n` human clicks on `code`, spread over the shards: one entry on each, as redirect
/// instances ship them.
async fn add_clicks(env: &TestEnv, code: &str, n: usize) {
    for shard in 0..SHARDS {
        let on_this_shard = (usize::from(shard)..n).step_by(usize::from(SHARDS)).count();
        add_batch(env, shard, &vec![click(code); on_this_shard]).await;
    }
}

/// A worker that claims whatever is pending at once.
async fn claimer(env: &TestEnv, consumer: &str) -> Worker {
    worker_from(source(env, consumer).with("KURZ_ANALYTICS_CLAIM_IDLE_MS", "1")).await
}

#[tokio::test]
async fn entries_claimed_after_their_commit_are_only_acknowledged() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    add_clicks(&env, "promo", 6).await;
    let mut first = worker(&env, "first").await;
    // Dies between COMMIT and XACK.
    let applied = first.process_once_without_ack().await.expect("a step");
    assert_eq!(applied.applied, 6);
    let before = snapshot(&env, id).await;
    assert_eq!(pending_everywhere(&env).await, 2, "two entries of three");

    let mut second = claimer(&env, "second").await;
    let outcome = drain(&mut second).await;

    assert_eq!((outcome.came_back, outcome.duplicate), (2, 6));
    assert_eq!(outcome.applied, 0);
    assert_eq!(snapshot(&env, id).await, before, "nothing counted twice");
    assert_eq!(clicks(&env, id).await, 6);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn a_restarted_worker_finds_its_own_pending_entries_applied() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    add_clicks(&env, "promo", 4).await;
    let mut before_restart = worker(&env, "pod-0").await;
    before_restart
        .process_once_without_ack()
        .await
        .expect("a step");
    drop(before_restart);
    // New entries too: they count, the old ones do not again.
    add_clicks(&env, "promo", 2).await;

    let mut after_restart = worker(&env, "pod-0").await;
    let outcome = drain(&mut after_restart).await;

    assert_eq!((outcome.duplicate, outcome.applied), (4, 2));
    assert_eq!(clicks(&env, id).await, 6);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn a_batch_claimed_while_its_worker_could_not_commit_counts_once() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    add_clicks(&env, "promo", 5).await;
    let proxy = env.postgres_proxy().await;
    let mut stuck =
        worker_from(source(&env, "stuck").with("KURZ_DATABASE_URL", env.database_url_via(&proxy)))
            .await;
    proxy.set(Fault::Reset);
    stuck
        .process_once()
        .await
        .expect_err("PostgreSQL is unreachable");

    // Another worker claims the stuck one's entries and applies them.
    let mut claiming = claimer(&env, "claiming").await;
    let claimed = claiming.process_once().await.expect("a step");
    assert_eq!((claimed.came_back, claimed.applied), (2, 5));
    // The stuck worker's commit finally gets through: it finds every entry applied.
    proxy.restore();
    let retried = until_committed(&mut stuck).await;

    assert_eq!((retried.duplicate, retried.applied), (5, 0));
    assert_eq!(clicks(&env, id).await, 5);
    let hours = hourly(&env, id).await;
    assert_eq!(hours.iter().map(|h| h.1).sum::<i64>(), 5);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn a_worker_killed_mid_batch_leaves_its_entries_to_another_that_counts_them_exactly() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let proxy = env.postgres_proxy().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kurz-analytics"))
        .env_clear()
        .envs(
            [
                ("KURZ_DATABASE_URL", env.database_url_via(&proxy)),
                ("KURZ_REDIS_URL", env.redis_url()),
                ("KURZ_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
                ("KURZ_CLICK_STREAMS", SHARDS.to_string()),
                ("KURZ_ANALYTICS_CONSUMER", "doomed".to_owned()),
                ("KURZ_ANALYTICS_BLOCK_MS", "50".to_owned()),
                ("KURZ_LOG", "warn".to_owned()),
            ]
            .into_iter(),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("starting kurz-analytics");
    // Up once its consumer has read from the group (the first read registers it).
    kurz_testkit::eventually("the worker reads the streams", || async {
        consumers(&env).await.contains(&"doomed".to_owned())
    })
    .await;
    proxy.set(Fault::Blackhole);
    // One entry of eight clicks, so the worker's blocked read gets all eight in one batch (a
    // read blocked on several streams is answered with the one that woke it).
    add_batch(&env, 0, &vec![click("promo"); 8]).await;
    kurz_testkit::eventually("the worker holds the batch", || async {
        pending_everywhere(&env).await == 1
    })
    .await;

    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    let mut survivor = claimer(&env, "survivor").await;
    let outcome = drain(&mut survivor).await;

    assert_eq!(outcome.applied, 8);
    assert_eq!(clicks(&env, id).await, 8);
    assert_eq!(pending_everywhere(&env).await, 0);
}

/// The consumers the group knows on shard 0.
async fn consumers(env: &TestEnv) -> Vec<String> {
    use deadpool_redis::redis::AsyncCommands;
    let mut conn = env.redis_conn().await;
    let reply: Result<deadpool_redis::redis::streams::StreamInfoConsumersReply, _> = conn
        .xinfo_consumers(
            kurz_repository::clicks::stream_key(0),
            kurz_repository::clicks::GROUP,
        )
        .await;
    reply
        .map(|r| r.consumers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_applied_entry_trimmed_while_pending_is_still_only_acknowledged() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    add(&env, 0, &click("promo")).await;
    let mut before_restart = worker(&env, "pod-0").await;
    before_restart
        .process_once_without_ack()
        .await
        .expect("a step");
    drop(before_restart);
    // MAXLEN trims the entry; the group still lists it as pending, without its fields.
    let mut conn = env.redis_conn().await;
    let _: usize = deadpool_redis::redis::cmd("XTRIM")
        .arg(kurz_repository::clicks::stream_key(0))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("XTRIM");

    let mut after_restart = worker(&env, "pod-0").await;
    let outcome = drain(&mut after_restart).await;

    // It comes back without its clicks, so it adds no duplicate clicks; and it is not invalid.
    assert_eq!(
        (outcome.came_back, outcome.duplicate, outcome.invalid),
        (1, 0, 0)
    );
    assert_eq!(clicks(&env, id).await, 1);
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn workers_that_keep_claiming_each_others_entries_still_count_each_click_once() {
    let env = TestEnv::start().await;
    let ids = [link(&env, "one", None).await, link(&env, "two", None).await];
    for i in 0..300 {
        let code = if i % 3 == 0 { "one" } else { "two" };
        add(&env, (i % usize::from(SHARDS)) as u16, &click(code)).await;
    }
    // Small batches and no idle time: each one claims what the other holds in flight.
    let grabby = |consumer| {
        source(&env, consumer)
            .with("KURZ_ANALYTICS_CLAIM_IDLE_MS", "1")
            .with("KURZ_ANALYTICS_BATCH", "7")
    };
    let mut a = worker_from(grabby("a")).await;
    let mut b = worker_from(grabby("b")).await;

    tokio::join!(busy(&mut a), busy(&mut b));
    drain(&mut claimer(&env, "sweeper").await).await;

    assert_eq!(clicks(&env, ids[0]).await, 100);
    assert_eq!(clicks(&env, ids[1]).await, 200);
    let counted: i64 = query_one(&env, "SELECT sum(humans)::int8 FROM click_hourly", &[]).await;
    assert_eq!(counted, 300);
    assert_eq!(pending_everywhere(&env).await, 0);
}

/// Steps until a step finds nothing; a step that loses a race (an overlap thrice, a
/// deadlock) is simply taken again, as the worker's loop does.
async fn busy(worker: &mut Worker) {
    for _ in 0..500 {
        if let Ok(step) = worker.process_once().await
            && step.read == 0
            && step.came_back == 0
        {
            return;
        }
    }
    panic!("the streams never drained");
}
