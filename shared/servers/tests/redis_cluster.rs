//! A real six-node Redis Cluster on loopback: slots spread over three masters, a failover
//! after a master is killed, and the killed node back as a replica.

use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, AsyncCommands as _, ErrorKind, ServerErrorKind};
use kurz_servers::RedisCluster;

/// One key per master, so the scenario touches every shard.
async fn a_key_on_each_master(cluster: &RedisCluster) -> Vec<(String, usize)> {
    let masters = cluster.masters().await;
    let mut keys: Vec<(String, usize)> = Vec::new();
    for n in 0.. {
        let key = format!("kurz:test:{n}");
        let master = cluster.master_of(&key).await;
        if !keys.iter().any(|(_, m)| *m == master) {
            keys.push((key, master));
        }
        if keys.len() == masters.len() {
            return keys;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn a_killed_master_fails_over_to_its_replica_with_its_keys_and_rejoins_as_a_replica() {
    let started = Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!("cluster ready in {:?}", started.elapsed());
    let masters_before = cluster.masters().await;
    assert_eq!(masters_before, [0, 1, 2]);
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(cluster.nodes_setting().split(',').count(), 6);

    // Every key is accepted by the master `master_of` names, and any other master redirects
    // there: the slot map is Redis's, not ours.
    let keys = a_key_on_each_master(&cluster).await;
    for (key, master) in &keys {
        let mut owner = cluster.node_connection(*master).await;
        let () = owner
            .set(key, "before")
            .await
            .expect("SET on the slot's master");
        let other = masters_before
            .iter()
            .find(|m| *m != master)
            .expect("another master");
        let refused = cluster
            .node_connection(*other)
            .await
            .get::<_, String>(key)
            .await
            .expect_err("a GET on another master");
        assert_eq!(refused.kind(), ErrorKind::Server(ServerErrorKind::Moved));
        let to = refused.redirect_node().map(|(address, _slot)| address);
        assert_eq!(to, Some(&*format!("127.0.0.1:{}", cluster.port(*master))));
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(400)
            .query_async(&mut owner)
            .await
            .expect("WAIT");
        assert_eq!(acked, 1, "the replica of node {master} has {key}");
    }

    let (key, victim) = keys[0].clone();
    cluster.kill(victim).await;
    let killed = Instant::now();
    cluster
        .await_failover(victim, Duration::from_secs(10))
        .await;
    eprintln!("failover done in {:?}", killed.elapsed());

    let promoted = cluster.master_of(&key).await;
    assert!(
        !masters_before.contains(&promoted),
        "a former replica serves {key}"
    );
    let value: String = cluster
        .node_connection(promoted)
        .await
        .get(&key)
        .await
        .expect("GET on the promoted replica");
    assert_eq!(value, "before");
    for (other_key, master) in &keys[1..] {
        let value: String = cluster
            .node_connection(*master)
            .await
            .get(other_key)
            .await
            .expect("GET on a master that stayed");
        assert_eq!(value, "before");
    }

    let restarting = Instant::now();
    cluster.restart(victim).await;
    eprintln!("rejoined in {:?}", restarting.elapsed());
    assert!(cluster.is_running(victim));
    assert!(!cluster.masters().await.contains(&victim));
    let mut rejoined = cluster.node_connection(victim).await;
    let replication: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut rejoined)
        .await
        .expect("INFO");
    assert!(
        replication.contains(&format!("master_port:{}\r\n", cluster.port(promoted))),
        "node {victim} replicates node {promoted}: {replication}"
    );
    let () = redis::cmd("READONLY")
        .query_async(&mut rejoined)
        .await
        .expect("READONLY");
    let value: String = rejoined.get(&key).await.expect("GET on the replica");
    assert_eq!(
        value, "before",
        "the rejoined node synced from its new master"
    );

    cluster.flush_all().await;
    for (key, master) in &keys {
        let master = if *master == victim { promoted } else { *master };
        let value: Option<String> = cluster
            .node_connection(master)
            .await
            .get(key)
            .await
            .expect("GET after flush_all");
        assert_eq!(value, None, "flush_all emptied node {master}");
    }
}
