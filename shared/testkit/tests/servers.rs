//! The test kit's own guarantees: real servers, migrated per-test databases, stop and restart.

use deadpool_redis::redis;
use kurz_testkit::{ShutdownMode, TestEnv};

#[tokio::test]
async fn each_test_database_is_a_migrated_copy_of_the_template() {
    let env = TestEnv::start().await;
    let sql = env.sql().await;

    let tables: Vec<String> = sql
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert!(tables.contains(&"links".to_owned()), "{tables:?}");
    assert!(tables.contains(&"key_pool".to_owned()), "{tables:?}");
    let db: String = sql
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("query")
        .get(0);
    assert!(db.starts_with("test_"), "{db}");
}

#[tokio::test]
async fn postgres_keeps_committed_data_across_an_immediate_shutdown() {
    let env = TestEnv::start().await;
    env.sql()
        .await
        .batch_execute("INSERT INTO issued_codes (code) VALUES ('survivor')")
        .await
        .expect("insert");

    env.postgres.stop(ShutdownMode::Immediate).await;
    assert!(
        tokio_postgres::connect(&env.database_url(), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    env.postgres.restart().await;

    let n: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM issued_codes WHERE code = 'survivor'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn redis_can_be_stopped_and_comes_back_empty() {
    let env = TestEnv::start().await;
    let mut conn = env.redis_conn().await;
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .expect("set");

    env.redis.stop().await;
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_err()
    );
    env.redis.restart().await;

    let mut conn = env.redis_conn().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(v, None);
}
