//! The fault proxy, between a client and a real PostgreSQL.

use std::time::Duration;

use kurz_testkit::{Fault, TestEnv};
use tokio::time::{Instant, timeout};
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect through the proxy");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn traffic_passes_through_unchanged_without_a_fault() {
    let env = TestEnv::start().await;
    let proxy = env.postgres_proxy().await;
    let client = connect(&env.database_url_via(&proxy)).await;

    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);

    assert_eq!(one, 1);
    assert_eq!(proxy.open_connections(), 1);
}

#[tokio::test]
async fn reset_breaks_open_connections_and_refuses_new_ones() {
    let env = TestEnv::start().await;
    let proxy = env.postgres_proxy().await;
    let client = connect(&env.database_url_via(&proxy)).await;

    proxy.set(Fault::Reset);

    let query = timeout(Duration::from_secs(5), client.query_one("SELECT 1", &[])).await;
    assert!(
        matches!(query, Ok(Err(_))),
        "the open connection fails at once"
    );
    let fresh = timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&env.database_url_via(&proxy), NoTls),
    )
    .await;
    assert!(
        matches!(fresh, Ok(Err(_))),
        "a new connection fails at once"
    );
}

#[tokio::test]
async fn blackhole_stalls_queries_until_the_fault_is_lifted() {
    let env = TestEnv::start().await;
    let proxy = env.postgres_proxy().await;
    let client = connect(&env.database_url_via(&proxy)).await;

    proxy.set(Fault::Blackhole);
    let stalled = tokio::spawn(async move {
        client
            .query_one("SELECT 1", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stalled.is_finished(), "no answer while blackholed");

    proxy.restore();

    let answer = timeout(Duration::from_secs(5), stalled)
        .await
        .expect("answered after restore");
    assert_eq!(answer.expect("task").expect("query"), 1);
}

#[tokio::test]
async fn latency_delays_every_round_trip() {
    let env = TestEnv::start().await;
    let proxy = env.postgres_proxy().await;
    let client = connect(&env.database_url_via(&proxy)).await;
    proxy.set(Fault::Latency(Duration::from_millis(200)));

    let started = Instant::now();
    client.query_one("SELECT 1", &[]).await.expect("query");

    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}
