//! One Redis connection type for one server and for a Redis Cluster.
//!
//! [`RedisConn`] is a multiplexed, self-reconnecting handle: a `ConnectionManager` on one
//! server, a `ClusterConnection` on a cluster (one multiplexed connection per node, routed by
//! key slot, following `MOVED` and failovers). Both are cheap to clone and carry many requests
//! at once. It implements `ConnectionLike`, so `query_async`, `Script::invoke_async` and
//! pipelines take it as they took a `ConnectionManager`.
//!
//! What a cluster cannot do is the caller's to avoid: a pipeline or a command over keys of
//! different slots fails (`CROSSSLOT`); such work goes key by key where [`RedisConn::is_cluster`].

use std::time::Duration;

use deadpool_redis::redis::{self, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};
use kurz_settings::{RedisSettings, RedisTarget};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use secrecy::ExposeSecret;

/// How one [`RedisConn`] waits and retries; the connect timeout is the settings'.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The longest wait for one answer.
    pub response_timeout: Duration,
    /// Attempts after the first on a broken connection. 0 for writes that must not be sent
    /// twice (a click batch's `XADD`): a retry after a lost answer would repeat it.
    pub retries: u32,
}

/// A multiplexed connection to one Redis server or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() {
            "RedisConn::Cluster"
        } else {
            "RedisConn::Single"
        })
    }
}

impl RedisConn {
    /// Opens no connection yet: Redis may be down at start, and Kurz runs without it.
    pub fn lazy(settings: &RedisSettings, tuning: Tuning) -> RedisResult<Self> {
        // Reconnect waits: short, since a command waits on them, and a few attempts cover a
        // restart without piling up while Redis is down.
        let min_delay = Duration::from_millis(10);
        match &settings.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.expose_secret())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(tuning.response_timeout))
                    .set_number_of_retries(tuning.retries as usize)
                    .set_min_delay(min_delay)
                    .set_max_delay(settings.connect_timeout);
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster(nodes) => {
                let client = cluster_client(nodes, settings, tuning).build()?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(
                        ClusterConfig::new()
                            .set_connection_timeout(settings.connect_timeout)
                            .set_response_timeout(tuning.response_timeout),
                    ),
                ))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `commands`, each on one key, and returns their answers in order: as one pipeline
    /// (one round trip) on one server; on a cluster, where their keys lie in many slots and a
    /// pipeline must stay in one, each command on its own, all at once (the cluster
    /// connection sends those of a node together: a round trip per node).
    pub async fn query_all<T: FromRedisValue>(&self, commands: Vec<Cmd>) -> RedisResult<Vec<T>> {
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            Self::Cluster(conn) => {
                futures_util::future::try_join_all(commands.iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async(&mut conn).await }
                }))
                .await
            }
        }
    }
}

/// The cluster client of `nodes`, with Kurz's budgets rather than redis-rs' defaults (16
/// retries, waits from 1.28 s up): a cache call must give up within milliseconds.
pub(crate) fn cluster_client(
    nodes: &[secrecy::SecretString],
    settings: &RedisSettings,
    tuning: Tuning,
) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.iter().map(|n| n.expose_secret().to_owned()))
        .connection_timeout(settings.connect_timeout)
        .response_timeout(tuning.response_timeout)
        // The whole call, redirects and retries included, within the same bound.
        .overall_response_timeout(Some(tuning.response_timeout))
        .retries(tuning.retries)
        .min_retry_wait(10)
        .max_retry_wait(100)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
