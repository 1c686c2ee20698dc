//! Redis connection settings.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{SettingsError, Source, in_range, positive_millis};

/// Default for the local stack (`infra/local/run`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:56379";

/// One Redis server, or a Redis Cluster.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// `KURZ_REDIS_URL`, a `redis://` (or `rediss://`) URL.
    Single(SecretString),
    /// `KURZ_REDIS_CLUSTER_NODES`: seed nodes of a cluster, each a `redis://` URL (credentials
    /// from the first); the client discovers the others from them.
    Cluster(Vec<SecretString>),
}

/// How a service reaches its Redis cache. Redis is only ever a cache, so its budgets are small:
/// a slow Redis must cost a request milliseconds, not seconds.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `KURZ_REDIS_URL` (default: the local stack's) or `KURZ_REDIS_CLUSTER_NODES`, a comma-
    /// separated list of `host:port` or `redis://[user:password@]host:port` items; one of the
    /// two.
    pub target: RedisTarget,
    /// `KURZ_REDIS_POOL_SIZE`: multiplexed connections per process (default 4; each one carries
    /// many requests at once, so a handful is plenty). A cluster connection is one handle
    /// multiplexed per node, so no pool is used there and this is ignored.
    pub pool_size: usize,
    /// `KURZ_REDIS_CONNECT_TIMEOUT_MS` (default 500 ms).
    pub connect_timeout: Duration,
    /// `KURZ_REDIS_COMMAND_TIMEOUT_MS`: the whole budget of one cache call, pool wait included
    /// (default 50 ms: a cache that answers slower than a database lookup is not worth
    /// waiting for).
    pub command_timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    redis_url: Option<SecretString>,
    redis_cluster_nodes: Option<SecretString>,
    redis_pool_size: Option<usize>,
    redis_connect_timeout_ms: Option<u64>,
    redis_command_timeout_ms: Option<u64>,
}

impl RedisSettings {
    /// The variables [`Self::from_source`] reads (`KURZ_REDIS_*`).
    pub fn variables() -> std::collections::BTreeSet<String> {
        crate::variables::names_of::<Vars>()
    }

    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let pool_size = in_range(
            "KURZ_REDIS_POOL_SIZE",
            vars.redis_pool_size.unwrap_or(4),
            1..=1_000,
        )?;
        let target = match (vars.redis_url, vars.redis_cluster_nodes) {
            (Some(_), Some(_)) => {
                return Err(SettingsError::invalid(
                    "KURZ_REDIS_CLUSTER_NODES",
                    "set either KURZ_REDIS_URL (one server) or KURZ_REDIS_CLUSTER_NODES (a \
                     cluster), not both",
                ));
            }
            (_, Some(nodes)) => RedisTarget::Cluster(cluster_nodes(&nodes)?),
            (url, None) => {
                RedisTarget::Single(url.unwrap_or_else(|| SecretString::from(DEFAULT_REDIS_URL)))
            }
        };
        Ok(Self {
            target,
            pool_size,
            connect_timeout: positive_millis(
                "KURZ_REDIS_CONNECT_TIMEOUT_MS",
                vars.redis_connect_timeout_ms.unwrap_or(500),
            )?,
            command_timeout: positive_millis(
                "KURZ_REDIS_COMMAND_TIMEOUT_MS",
                vars.redis_command_timeout_ms.unwrap_or(50),
            )?,
        })
    }
}

/// The items of `KURZ_REDIS_CLUSTER_NODES` as `redis://` URLs: a bare `host:port` gets the
/// scheme; a URL is kept as given (its credentials, `rediss://`).
fn cluster_nodes(raw: &SecretString) -> Result<Vec<SecretString>, SettingsError> {
    const VAR: &str = "KURZ_REDIS_CLUSTER_NODES";
    let mut nodes = Vec::new();
    for item in raw.expose_secret().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let url = if item.contains("://") {
            item.to_owned()
        } else {
            format!("redis://{item}")
        };
        // The item itself is not quoted back: it may hold a password.
        let parsed = url::Url::parse(&url).map_err(|e| {
            SettingsError::invalid(VAR, format!("an item is no host:port or URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.port().is_none() {
            return Err(SettingsError::invalid(
                VAR,
                "every item needs a host and a port, as host:port or redis://host:port",
            ));
        }
        nodes.push(SecretString::from(url));
    }
    if nodes.is_empty() {
        return Err(SettingsError::invalid(VAR, "lists no node"));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn nodes(raw: &str) -> Result<Vec<String>, SettingsError> {
        let source = Source::from_vars([("KURZ_REDIS_CLUSTER_NODES", raw)]);
        match RedisSettings::from_source(&source)?.target {
            RedisTarget::Cluster(nodes) => {
                Ok(nodes.iter().map(|n| n.expose_secret().to_owned()).collect())
            }
            RedisTarget::Single(_) => panic!("a node list means a cluster"),
        }
    }

    #[test]
    fn without_a_node_list_the_target_is_one_server() {
        let settings = RedisSettings::from_source(&Source::default()).expect("valid");
        match settings.target {
            RedisTarget::Single(url) => assert_eq!(url.expose_secret(), DEFAULT_REDIS_URL),
            RedisTarget::Cluster(_) => panic!("no cluster was asked for"),
        }
    }

    #[test]
    fn cluster_nodes_are_host_port_items_or_urls() {
        assert_eq!(
            nodes("10.0.0.1:6379, redis://:secret@10.0.0.2:6380,").expect("valid"),
            ["redis://10.0.0.1:6379", "redis://:secret@10.0.0.2:6380"]
        );
    }

    #[test]
    fn a_node_without_a_port_or_an_empty_list_is_refused() {
        for bad in ["10.0.0.1", " , ", "http://10.0.0.1:6379"] {
            let err = nodes(bad).expect_err(bad);
            assert!(
                err.to_string().contains("KURZ_REDIS_CLUSTER_NODES"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_url_and_a_node_list_together_are_refused() {
        let source = Source::from_vars([
            ("KURZ_REDIS_URL", "redis://127.0.0.1:6379"),
            ("KURZ_REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
        ]);
        let err = RedisSettings::from_source(&source).expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
    }
}
