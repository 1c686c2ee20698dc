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

use deadpool_redis::redis;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};

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
    settings: &kurz_settings::RedisSettings,
    channel: &'static str,
    on_event: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Invalidation) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (url, timeout) = (settings.url.clone(), settings.connect_timeout);
    tokio::spawn(follow(url, timeout, channel, on_event))
}

/// Follows `channel` until the future is dropped, reconnecting with backoff (100 ms
/// doubling to 5 s) whenever the subscription breaks. Uses its own connection: a pooled,
/// multiplexed one must never carry a subscription.
pub async fn follow<F, Fut>(
    url: SecretString,
    connect_timeout: Duration,
    channel: &'static str,
    on_event: F,
) where
    F: Fn(Invalidation) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut retry = FIRST_RETRY;
    loop {
        match subscribe(&url, connect_timeout, channel).await {
            Ok(pubsub) => {
                retry = FIRST_RETRY;
                tracing::debug!(channel, "subscribed to cache invalidations");
                on_event(Invalidation::Resubscribed).await;
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(code) => on_event(Invalidation::Code(code)).await,
                        Err(e) => tracing::warn!(error = %e, "unreadable invalidation message"),
                    }
                }
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

async fn subscribe(
    url: &SecretString,
    connect_timeout: Duration,
    channel: &'static str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let connect = async {
        let mut pubsub = redis::Client::open(url.expose_secret())?
            .get_async_pubsub()
            .await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}
