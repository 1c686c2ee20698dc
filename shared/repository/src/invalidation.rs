//! Cross-instance invalidation of in-process caches over Redis pub/sub.
//!
//! The create service publishes a code on [`CHANNEL`] whenever the link behind it changes
//! (created, deleted, disabled); every redirect instance follows the channel and drops that
//! code from its in-process cache. Likewise for verified API keys on [`AUTH_CHANNEL`]: a
//! revoked key or a disabled account is dropped by every create instance. Pub/sub is at-most-once: a subscriber that was disconnected may have
//! missed messages, so it reports [`Invalidation::Resubscribed`] after every (re)subscription
//! and the cache owner flushes everything. The in-process TTL bounds what a message lost
//! without a disconnect can cost.

use std::future::Future;
use std::time::Duration;

use deadpool_redis::redis::{self, FromRedisValue, ProtocolVersion, PushInfo, PushKind};
use futures_util::StreamExt;
use kurz_settings::{RedisSettings, RedisTarget};
use secrecy::{ExposeSecret, SecretString};

use crate::redis_conn::{Tuning, cluster_client};

/// The channel codes are published on.
pub const CHANNEL: &str = "kurz:invalidate";
/// The channel changed API keys and accounts are published on: `key:{id}` or `account:{id}`,
/// never a key or a digest.
pub const AUTH_CHANNEL: &str = "kurz:invalidate:auth";

/// What a subscriber tells the cache owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The thing behind this payload changed (a code, or `key:{id}` on the auth channel).
    Code(String),
    /// Subscribed (again): messages sent while disconnected are lost; forget everything.
    Resubscribed,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Follows `channel` on a task of its own (see [`follow`]), with the Redis of `settings`.
/// Abort the handle to stop.
pub fn spawn_follower<F, Fut>(
    settings: &RedisSettings,
    channel: &'static str,
    on_event: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Invalidation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(follow(settings.clone(), channel, on_event))
}

/// Follows `channel` until the future is dropped, reconnecting with backoff (100 ms
/// doubling to 5 s) whenever the subscription breaks. Uses its own connection: a pooled,
/// multiplexed one must never carry a subscription. On a Redis Cluster the subscription is
/// sharded (`SSUBSCRIBE`, over RESP3), held by the nodes of the channel's slot.
pub async fn follow<F, Fut>(settings: RedisSettings, channel: &'static str, on_event: F)
where
    F: Fn(Invalidation) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut retry = FIRST_RETRY;
    loop {
        let followed = match &settings.target {
            RedisTarget::Single(url) => {
                follow_single(url, settings.connect_timeout, channel, &on_event).await
            }
            RedisTarget::Cluster(nodes) => {
                follow_sharded(nodes, &settings, channel, &on_event).await
            }
        };
        match followed {
            Ok(()) => {
                retry = FIRST_RETRY;
                tracing::warn!("cache invalidation subscription lost; resubscribing");
            }
            Err(e) => {
                tracing::debug!(error = %e, retry_ms = retry.as_millis() as u64, "cannot subscribe to cache invalidations")
            }
        }
        // Also after a lost subscription: a Redis that keeps dropping us is not hammered.
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One subscription on one server, until it breaks (`Ok`) or cannot be made (`Err`).
async fn follow_single<F, Fut>(
    url: &SecretString,
    connect_timeout: Duration,
    channel: &'static str,
    on_event: &F,
) -> redis::RedisResult<()>
where
    F: Fn(Invalidation) -> Fut,
    Fut: Future<Output = ()>,
{
    let connect = async {
        let mut pubsub = redis::Client::open(url.expose_secret())?
            .get_async_pubsub()
            .await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| timed_out())??;
    tracing::debug!(channel, "subscribed to cache invalidations");
    on_event(Invalidation::Resubscribed).await;
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(code) => on_event(Invalidation::Code(code)).await,
            Err(e) => tracing::warn!(error = %e, "unreadable invalidation message"),
        }
    }
    Ok(())
}

/// How often a sharded subscription that may have broken is asked for again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(250);

/// One sharded subscription on a cluster, until its connection task ends (`Ok`) or it cannot
/// be made (`Err`).
///
/// redis-rs replays subscriptions only when it reconnects to the same node or refreshes its
/// slot map, and an idle subscriber does neither: after its node died (a failover) it would
/// stay deaf (measured: no message for 9 s, long after the replica had taken over). So every
/// disconnection of a node, which may be the channel's, makes it `SSUBSCRIBE` again every
/// 250 ms until a confirmation comes; the shard's replica accepts the subscription, and keeps
/// it when promoted. Each confirmation after a break reports [`Invalidation::Resubscribed`],
/// since messages may have been lost meanwhile.
async fn follow_sharded<F, Fut>(
    nodes: &[SecretString],
    settings: &RedisSettings,
    channel: &'static str,
    on_event: &F,
) -> redis::RedisResult<()>
where
    F: Fn(Invalidation) -> Fut,
    Fut: Future<Output = ()>,
{
    let (pushes, mut received) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
    let tuning = Tuning {
        response_timeout: settings.connect_timeout,
        retries: 2,
    };
    let client = cluster_client(nodes, settings, tuning)
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(pushes)
        .build()?;
    let mut conn = tokio::time::timeout(settings.connect_timeout, client.get_async_connection())
        .await
        .map_err(|_| timed_out())??;
    conn.ssubscribe(channel).await?;
    let mut confirmed = false;
    loop {
        match tokio::time::timeout(RESUBSCRIBE_EVERY, received.recv()).await {
            Ok(Some(push)) => match push.kind {
                PushKind::SSubscribe if !confirmed => {
                    confirmed = true;
                    tracing::debug!(channel, "subscribed to cache invalidations (sharded)");
                    on_event(Invalidation::Resubscribed).await;
                }
                PushKind::SMessage => match push.data.get(1).map(String::from_redis_value_ref) {
                    Some(Ok(code)) => on_event(Invalidation::Code(code)).await,
                    _ => tracing::warn!("unreadable invalidation message"),
                },
                // A node went away (perhaps the channel's), or the slot moved elsewhere.
                PushKind::Disconnection | PushKind::SUnsubscribe => confirmed = false,
                _ => {}
            },
            // The connection's task is gone: start over.
            Ok(None) => return Ok(()),
            Err(_) if !confirmed => {
                let again = tokio::time::timeout(RESUBSCRIBE_EVERY * 2, conn.ssubscribe(channel));
                if let Ok(Err(e)) = again.await {
                    tracing::debug!(error = %e, channel, "resubscribing to cache invalidations");
                }
            }
            Err(_) => {}
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}
