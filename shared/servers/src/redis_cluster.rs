//! A real Redis Cluster on loopback: six nodes, three masters with a replica each, so that
//! code written for the cluster meets MOVED, per-shard scripts and a real failover, not a
//! single server that accepts every key. Throwaway for a test ([`RedisCluster::start`]), or
//! kept on fixed ports for the local stack ([`RedisCluster::keep`], through the binary).
//!
//! The nodes are bootstrapped by hand with plain single-node connections (no redis-cli, no
//! sleeps: it polls), which reaches a ready cluster in about 2.2 s on this machine. The floor
//! is Redis's own: a master waits 2 s after start before it declares the cluster ok.
//!
//! "Master" and "replica" are the roles a node has now, not the ones it was started with: a
//! failover swaps them, and [`RedisCluster::masters`] and [`RedisCluster::master_of`] ask.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, FromRedisValue, aio::MultiplexedConnection};

use crate::process::{Home, ServerProcess, free_port, hand_over, server_dir};

/// Nodes in a cluster: three masters, then one replica of each (node `3 + i` replicates `i`).
pub const NODES: usize = 6;
const MASTERS: usize = 3;
const SLOTS: u16 = 16384;
/// The slot ranges of the three masters, as `redis-cli --cluster create` splits them.
const SLOT_RANGES: [(u16, u16); MASTERS] = [(0, 5460), (5461, 10922), (10923, 16383)];
/// How long a node may be unreachable before the others mark it failing. Redis's default is
/// 15 s; 500 ms makes a failover take about 2 s (measured: 1.7-2.2 s, against 3.5-4 s at
/// 2000), and lower values stop helping because the election itself waits 0.5-1 s.
const NODE_TIMEOUT_MS: &str = "500";
/// How long a start, a failover or a rejoin may take before we give up and show the logs:
/// each takes 1-3.5 s when the machine is busy.
const READY_WITHIN: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct RedisCluster {
    home: Home,
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    port: u16,
    /// The cluster bus (node-to-node gossip). Always chosen like the port: the default of
    /// port + 10000 lands in the ephemeral range and once collided with a client socket.
    bus_port: u16,
    process: ServerProcess,
}

impl RedisCluster {
    /// A ready throwaway cluster on free ports, in a temporary directory: every node says
    /// `cluster_state:ok`, the three replicas are linked and every node knows them. Panics
    /// with the end of every node's log if that takes over 30 s.
    pub async fn start() -> Self {
        let mut cluster = Self {
            home: Home::Temporary(server_dir("kurz-redis-cluster-")),
            nodes: (0..NODES).map(|_| Node::default()).collect(),
        };
        cluster.spawn_on_free_ports().await;
        if let Err(e) = cluster.bootstrap().await {
            panic!("{e}\n{}", cluster.log_tails());
        }
        cluster
    }

    /// A ready, empty cluster with its files in `dir/node-<i>`, the nodes on 127.0.0.1
    /// `port`..`port + 5` and their cluster buses on `port + 100`..`port + 105`. Pick `port`
    /// outside the ephemeral range (32768-60999), where client sockets could hold a bus port.
    /// It is a cache: every start bootstraps a new cluster (earlier `nodes.conf` removed).
    pub async fn keep(dir: &Path, port: u16) -> anyhow::Result<Self> {
        anyhow::ensure!(
            port.checked_add(100 + 5).is_some(),
            "port {port} leaves no room for the bus ports (port + 100..port + 105)"
        );
        let mut cluster = Self {
            home: Home::Kept(dir.to_owned()),
            nodes: (0..NODES).map(|_| Node::default()).collect(),
        };
        for (i, offset) in (0..NODES).zip(0_u16..) {
            cluster.prepare_dir(i)?;
            cluster.nodes[i].port = port + offset;
            cluster.nodes[i].bus_port = port + 100 + offset;
            cluster.launch(i);
        }
        for i in 0..NODES {
            anyhow::ensure!(
                cluster.answers_ping(i).await,
                "Redis node {i} did not answer PING on port {}\n{}",
                cluster.nodes[i].port,
                cluster.log_tails()
            );
        }
        if let Err(e) = cluster.bootstrap().await {
            anyhow::bail!("{e}\n{}", cluster.log_tails());
        }
        Ok(cluster)
    }

    /// For `KURZ_REDIS_CLUSTER_NODES`: "127.0.0.1:p0,...,127.0.0.1:p5". Every node, not only
    /// the masters, so a client can still discover the cluster while one of them is down.
    pub fn nodes_setting(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis://127.0.0.1:p` for each node, in node order: what redis-rs's cluster client takes.
    pub fn urls(&self) -> Vec<String> {
        (0..NODES).map(|i| self.url(i)).collect()
    }

    /// Node `i`'s port, to match against a MOVED redirect or `INFO replication`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Whether node `i`'s process is up ([`Self::kill`] stops it).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].process.is_running()
    }

    /// A connection to node `i` alone, for arranging and asserting on the node a test
    /// chose: it answers MOVED for keys of other masters instead of following it.
    pub async fn node_connection(&self, i: usize) -> MultiplexedConnection {
        self.try_connect(i)
            .await
            .unwrap_or_else(|e| panic!("connecting to Redis node {i}: {e}"))
    }

    /// The nodes that are masters now, in node order (after a failover, not `[0, 1, 2]`).
    pub async fn masters(&self) -> Vec<usize> {
        let mut masters = Vec::new();
        for i in self.running() {
            let info: String = self.ask(i, redis::cmd("INFO").arg("replication")).await;
            if info_field(&info, "role") == Some("master") {
                masters.push(i);
            }
        }
        masters
    }

    /// Empties every master, and through replication its replica: for tests that run one
    /// scenario after another on one cluster, since a start costs 2 s.
    pub async fn flush_all(&self) {
        for i in self.masters().await {
            let _: () = self.ask(i, &redis::cmd("FLUSHALL")).await;
        }
    }

    /// The node serving `key_or_channel`'s slot as master now (a sharded channel hashes like
    /// a key). Every live node's view must agree, so that during a failover this waits
    /// (up to 30 s) rather than answer with a node some clients would not yet use.
    pub async fn master_of(&self, key_or_channel: &str) -> usize {
        let any = self.running().next().expect("a running node");
        let slot: u16 = self
            .ask(
                any,
                redis::cmd("CLUSTER").arg("KEYSLOT").arg(key_or_channel),
            )
            .await;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut owners = Vec::new();
            for i in self.running() {
                owners.push(
                    self.view(i)
                        .await
                        .ok()
                        .and_then(|v| self.master_in(&v, slot)),
                );
            }
            if let Some(Some(owner)) = owners.first().copied()
                && owners.iter().all(|o| *o == Some(owner))
            {
                return owner;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes disagree on the master of slot {slot}: {owners:?}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// SIGKILLs node `i`, as a crash would: no goodbye to the other nodes.
    pub async fn kill(&self, i: usize) {
        self.nodes[i]
            .process
            .stop(libc::SIGKILL, Duration::from_secs(5))
            .await;
    }

    /// Returns once the cluster serves every slot without the `killed` node: a replica of
    /// its slots has been promoted, every live node says so and says `cluster_state:ok`.
    /// Panics with the logs after `within`. (For a killed replica, that holds at once.)
    pub async fn await_failover(&self, killed: usize, within: Duration) {
        assert!(!self.is_running(killed), "node {killed} is still running");
        let killed_port = self.nodes[killed].port;
        let started = Instant::now();
        loop {
            let mut done = true;
            for i in self.running() {
                done &= self.cluster_ok(i).await
                    && self.view(i).await.is_ok_and(|view| {
                        let live: Vec<_> = view
                            .iter()
                            .filter(|n| n.is_master() && n.port != killed_port)
                            .collect();
                        let covered: u32 = live.iter().map(|n| n.slot_count()).sum();
                        covered == u32::from(SLOTS)
                    });
            }
            if done {
                return;
            }
            assert!(
                started.elapsed() < within,
                "no failover of node {killed} within {within:?}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Starts the killed node `i` again on its ports with its `nodes.conf`, and returns once
    /// it is back as a replica: linked to its master, `cluster_state:ok`, and no live node
    /// flags it as failing. Call it after [`Self::await_failover`]: a master restarted before
    /// its replica took over comes back as the master.
    pub async fn restart(&self, i: usize) {
        assert!(
            self.nodes[i].process.is_empty(),
            "restart of a running node"
        );
        self.launch(i);
        assert!(
            self.answers_ping(i).await,
            "Redis node {i} did not restart\n{}",
            self.log_tails()
        );
        let port = self.nodes[i].port;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut done = self.cluster_ok(i).await && self.replica_linked(i).await;
            for other in self.running() {
                done &= self.view(other).await.is_ok_and(|view| {
                    view.iter()
                        .any(|n| n.port == port && n.has_flag("slave") && !n.is_failing())
                });
            }
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis node {i} did not rejoin as a replica\n{}",
                self.log_tails()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port)
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.home.path().join(format!("node-{i}"))
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..NODES).filter(|&i| self.is_running(i))
    }

    /// Creates node `i`'s directory for the server user, without an earlier run's files
    /// (which may belong to another user, and whose `nodes.conf` would name an old cluster).
    fn prepare_dir(&self, i: usize) -> anyhow::Result<()> {
        let dir = self.dir(i);
        std::fs::create_dir_all(&dir)?;
        for stale in ["redis.log", "redis.pid", "nodes.conf"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        hand_over(&dir);
        Ok(())
    }

    /// Spawns every node on fresh free ports, then respawns those that exited (a port was
    /// taken meanwhile) on new ones, up to 5 times each.
    async fn spawn_on_free_ports(&mut self) {
        for i in 0..NODES {
            self.prepare_dir(i).expect("creating a node directory");
        }
        let mut pending: Vec<usize> = (0..NODES).collect();
        for _ in 0..5 {
            for &i in &pending {
                self.nodes[i].port = free_port();
                self.nodes[i].bus_port = free_port();
                self.launch(i);
            }
            // All spawned first, so waiting for each in turn costs the slowest, not the sum.
            let mut failed = Vec::new();
            for &i in &pending {
                if !self.answers_ping(i).await {
                    failed.push(i);
                }
            }
            pending = failed;
            if pending.is_empty() {
                return;
            }
        }
        panic!(
            "Redis nodes {pending:?} did not start\n{}",
            self.log_tails()
        );
    }

    fn launch(&self, i: usize) {
        let node = &self.nodes[i];
        let dir = self.dir(i);
        let mut command = crate::redis::command(&dir, node.port);
        command
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--cluster-port", &node.bus_port.to_string()])
            // Keys of the other masters stay served while one master's slots fail over.
            .args(["--cluster-require-full-coverage", "no"])
            // A replica may always take over, however long its link has been down: a test
            // that kills a master wants the failover, not a stale-data refusal.
            .args(["--cluster-replica-validity-factor", "0"])
            // Replicas sync at once instead of waiting 5 s for others to share the transfer.
            .args(["--repl-diskless-sync-delay", "0"]);
        node.process.spawn(command);
    }

    async fn answers_ping(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        crate::redis::answers_ping(&node.process, node.port, Duration::from_secs(20)).await
    }

    /// The measured hand bootstrap (brief section 4.2): slots, distinct epochs (so no epoch
    /// collision rounds), one MEET per node with its bus port, then the replicas.
    async fn bootstrap(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        for (i, (first, last)) in SLOT_RANGES.into_iter().enumerate() {
            self.bootstrap_step(
                i,
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            )
            .await?;
        }
        for (i, epoch) in (0..NODES).zip(1_u32..) {
            self.bootstrap_step(i, redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(epoch))
                .await?;
        }
        for node in &self.nodes[1..] {
            let meet = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .arg(node.bus_port)
                .clone();
            self.bootstrap_step(0, &meet).await?;
        }
        self.poll(deadline, "every node knows the other five", async |i| {
            self.cluster_info(i)
                .await
                .is_some_and(|info| info_field(&info, "cluster_known_nodes") == Some("6"))
        })
        .await?;
        for master in 0..MASTERS {
            let id: String = self.ask(master, redis::cmd("CLUSTER").arg("MYID")).await;
            // Refused until gossip has told the replica that this id is a master.
            self.poll_one(deadline, "CLUSTER REPLICATE", MASTERS + master, async |i| {
                self.try_query::<()>(i, redis::cmd("CLUSTER").arg("REPLICATE").arg(&id))
                    .await
                    .is_ok()
            })
            .await?;
        }
        self.poll(deadline, "cluster_state:ok everywhere", async |i| {
            self.cluster_ok(i).await
        })
        .await?;
        for replica in MASTERS..NODES {
            self.poll_one(deadline, "replica linked", replica, async |i| {
                self.replica_linked(i).await
            })
            .await?;
        }
        // Else a client's first CLUSTER SLOTS, asked of a node that has not heard yet, would
        // miss a replica.
        self.poll(deadline, "every node knows the three replicas", async |i| {
            self.view(i).await.is_ok_and(|view| {
                view.iter().filter(|n| n.has_flag("slave")).count() == NODES - MASTERS
            })
        })
        .await
    }

    async fn bootstrap_step(&self, i: usize, cmd: &redis::Cmd) -> Result<(), String> {
        self.try_query::<()>(i, cmd)
            .await
            .map_err(|e| format!("Redis node {i}: {cmd:?}: {e}"))
    }

    /// Polls `check` on every node until it holds on all of them, or `deadline` passes.
    async fn poll(
        &self,
        deadline: Instant,
        what: &str,
        check: impl AsyncFn(usize) -> bool,
    ) -> Result<(), String> {
        for i in 0..NODES {
            self.poll_one(deadline, what, i, &check).await?;
        }
        Ok(())
    }

    async fn poll_one(
        &self,
        deadline: Instant,
        what: &str,
        i: usize,
        check: impl AsyncFn(usize) -> bool,
    ) -> Result<(), String> {
        while !check(i).await {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the Redis cluster was not ready within {READY_WITHIN:?}: \
                     no \"{what}\" on node {i}"
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        Ok(())
    }

    async fn cluster_info(&self, i: usize) -> Option<String> {
        self.try_query(i, redis::cmd("CLUSTER").arg("INFO"))
            .await
            .ok()
    }

    async fn cluster_ok(&self, i: usize) -> bool {
        self.cluster_info(i)
            .await
            .is_some_and(|info| info_field(&info, "cluster_state") == Some("ok"))
    }

    async fn replica_linked(&self, i: usize) -> bool {
        self.try_query::<String>(i, redis::cmd("INFO").arg("replication"))
            .await
            .is_ok_and(|info| {
                info_field(&info, "role") == Some("slave")
                    && info_field(&info, "master_link_status") == Some("up")
            })
    }

    /// Node `i`'s view of the cluster (`CLUSTER NODES`), one entry per node.
    async fn view(&self, i: usize) -> redis::RedisResult<Vec<NodeLine>> {
        let text: String = self
            .try_query(i, redis::cmd("CLUSTER").arg("NODES"))
            .await?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// Which of our nodes `view` says is the healthy master of `slot`.
    fn master_in(&self, view: &[NodeLine], slot: u16) -> Option<usize> {
        let by_port: HashMap<u16, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.port, i))
            .collect();
        view.iter()
            .find(|n| n.is_master() && n.serves(slot))
            .and_then(|n| by_port.get(&n.port).copied())
    }

    async fn try_connect(&self, i: usize) -> redis::RedisResult<MultiplexedConnection> {
        redis::Client::open(self.url(i))?
            .get_multiplexed_async_connection()
            .await
    }

    /// One command on a fresh connection to node `i`. A connection per query keeps no state
    /// to repair after a kill or restart; on loopback it costs well under a millisecond.
    async fn try_query<T: FromRedisValue>(
        &self,
        i: usize,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut conn = self.try_connect(i).await?;
        cmd.query_async(&mut conn).await
    }

    async fn ask<T: FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        self.try_query(i, cmd)
            .await
            .unwrap_or_else(|e| panic!("Redis node {i}: {cmd:?}: {e}"))
    }

    /// The last lines of every node's log, for a panic message.
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        for i in 0..NODES {
            let log = std::fs::read_to_string(self.dir(i).join("redis.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let _ = writeln!(
                tails,
                "--- node {i} (port {}, bus {}), end of its log:",
                self.nodes[i].port, self.nodes[i].bus_port
            );
            for line in &lines[lines.len().saturating_sub(15)..] {
                let _ = writeln!(tails, "{line}");
            }
        }
        tails
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // SIGKILL, as for a single Redis: a cache that vanishes, contents and all.
        for node in &self.nodes {
            node.process.stop_now(libc::SIGKILL, Duration::from_secs(5));
        }
    }
}

/// A `name:value` line of `INFO` or `CLUSTER INFO` (which end lines with CRLF).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    flags: String,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields.get(1)?;
        let (_, port) = address.split('@').next()?.rsplit_once(':')?;
        let slots = fields
            .get(8..)
            .unwrap_or_default()
            .iter()
            // Bracketed entries are slots being migrated or imported, not served.
            .filter(|range| !range.starts_with('['))
            .filter_map(|range| match range.split_once('-') {
                Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                None => range.parse().ok().map(|slot| (slot, slot)),
            })
            .collect();
        Some(Self {
            port: port.parse().ok()?,
            flags: (*fields.get(2)?).to_owned(),
            slots,
        })
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.split(',').any(|f| f == flag)
    }

    /// Failing, or suspected to be (`pfail`) by this node alone.
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    /// A master that serves: not failing.
    fn is_master(&self) -> bool {
        self.has_flag("master") && !self.is_failing()
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }

    fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(first, last)| u32::from(last - first) + 1)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_nodes_line_gives_port_flags_and_served_slots_but_not_migrating_ones() {
        let line = "07c3 127.0.0.1:30004@31004,host myself,master - 0 1426238317239 4 connected \
                    0-5460 5462 [5463->-e7d1]";

        let node = NodeLine::parse(line).expect("a node line");

        assert_eq!(node.port, 30004);
        assert!(node.is_master() && node.has_flag("myself"));
        assert!(node.serves(0) && node.serves(5460) && node.serves(5462));
        assert!(!node.serves(5461) && !node.serves(5463));
        assert_eq!(node.slot_count(), 5462);
    }

    #[test]
    fn a_master_flagged_failing_does_not_count_as_master() {
        let line = "e7d1 127.0.0.1:30002@31002 master,fail - 0 0 2 disconnected";

        let node = NodeLine::parse(line).expect("a node line");

        assert!(!node.is_master() && node.is_failing());
    }

    #[test]
    fn info_fields_are_read_without_their_crlf() {
        let info = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n";

        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "master_host"), None);
    }
}
