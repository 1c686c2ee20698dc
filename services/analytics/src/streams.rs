//! The Redis side: reading the click streams through the consumer group `kurz-analytics`,
//! claiming entries other workers left pending, acknowledging, and the group's state.
//!
//! Two connections: the blocking read has one of its own, whose response timeout is above
//! `BLOCK` (a multiplexed connection carrying a blocking command would stall every other
//! command behind it, and the default response timeout would cut the read short). Every
//! other command goes through the second one. Both reconnect by themselves after a failure.
//!
//! The read names every shard in one `XREADGROUP`, so it waits on all of them at once. On a
//! Redis Cluster the shards' keys lie in different slots (that is their point: spread over
//! the masters), and a command or pipeline over several slots fails; there every command
//! goes to one shard, all shards at once, and the read polls rather than blocks (a blocking
//! read would stall its node's multiplexed connection for every other shard on that node).

use std::future::Future;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands, ErrorKind, RedisError, RedisResult, Value};
use kurz_repository::analytics::EntryId;
use kurz_repository::clicks::{ClickEvent, DecodeError, GROUP, events_from_fields, stream_key};
use kurz_repository::redis_conn::{RedisConn, Tuning};
use kurz_settings::RedisSettings;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamPendingReply, StreamReadOptions, StreamReadReply,
};

use crate::settings::StreamSettings;

/// The least a worker's command may take: the cache budget of `KURZ_REDIS_COMMAND_TIMEOUT_MS`
/// (50 ms by default) is for request paths; a worker's command moves thousands of entries.
const MIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// On a cluster, how long an empty read waits before the next (at most `KURZ_ANALYTICS_BLOCK_MS`):
/// a poll of every shard ten times a second when idle, cheap next to a worker's batch.
const CLUSTER_POLL: Duration = Duration::from_millis(100);

/// One stream entry as read: a batch of clicks from one redirect instance.
#[derive(Debug, Clone)]
pub struct Entry {
    pub shard: u16,
    pub id: EntryId,
    pub events: Result<Vec<ClickEvent>, DecodeError>,
    /// Delivered before (claimed from another consumer, or this consumer's own from before a
    /// restart): it may have been applied already, and it is not part of a contiguous run.
    pub came_back: bool,
}

/// What one shard's consumer group says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// Entries not yet delivered to the group (`XINFO GROUPS` `lag`; `None` when Redis
    /// cannot tell, after some deletions).
    pub lag: Option<u64>,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Every entry before this one is acknowledged and can never be delivered again: the
    /// oldest pending entry, or just after the last delivered one when none is pending.
    pub settled_before: EntryId,
}

/// The streams of `settings.shards` shards, read as `settings.consumer`.
#[derive(Clone)]
pub struct Streams {
    blocking: RedisConn,
    commands: RedisConn,
    keys: Vec<String>,
    settings: StreamSettings,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("keys", &self.keys)
            .field("consumer", &self.settings.consumer)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// Connects (lazily) and creates the consumer group on every shard.
    pub async fn connect(redis: &RedisSettings, settings: &StreamSettings) -> RedisResult<Self> {
        let command_timeout = redis.command_timeout.max(MIN_COMMAND_TIMEOUT);
        let tuning = |response_timeout| Tuning {
            response_timeout,
            retries: 2,
        };
        let blocking = RedisConn::lazy(redis, tuning(settings.block + command_timeout))?;
        let commands = RedisConn::lazy(redis, tuning(command_timeout))?;
        let streams = Self {
            blocking,
            commands,
            keys: (0..settings.shards).map(stream_key).collect(),
            settings: settings.clone(),
        };
        streams.create_groups().await?;
        Ok(streams)
    }

    /// `XGROUP CREATE key kurz-analytics 0 MKSTREAM` on every shard; a group that exists
    /// already is fine. From `0`, so events captured before the first worker ever ran count.
    pub async fn create_groups(&self) -> RedisResult<()> {
        let mut conn = self.commands.clone();
        for key in &self.keys {
            let created: RedisResult<()> = conn.xgroup_create_mkstream(key, GROUP, "0").await;
            match created {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// New entries, up to `count` per shard, waiting up to `BLOCK` for some if `wait`.
    pub async fn read_new(&self, wait: bool, count: usize) -> RedisResult<Vec<Entry>> {
        if self.commands.is_cluster() {
            let options = StreamReadOptions::default()
                .group(GROUP, &self.settings.consumer)
                .count(count);
            let entries = self.read_each_shard(">", &options, false).await?;
            if entries.is_empty() && wait {
                tokio::time::sleep(self.settings.block.min(CLUSTER_POLL)).await;
            }
            return Ok(entries);
        }
        let mut options = StreamReadOptions::default()
            .group(GROUP, &self.settings.consumer)
            .count(count);
        if wait {
            options = options.block(self.settings.block.as_millis() as usize);
        }
        let ids = vec![">"; self.keys.len()];
        let mut conn = if wait {
            self.blocking.clone()
        } else {
            self.commands.clone()
        };
        let reply: Option<StreamReadReply> = conn.xread_options(&self.keys, &ids, &options).await?;
        Ok(self.entries(reply, false))
    }

    /// This consumer's own pending entries (delivered to it before a restart under the same
    /// name, or left unacknowledged after a failed `XACK`), up to `count` per shard.
    pub async fn read_own_pending(&self, count: usize) -> RedisResult<Vec<Entry>> {
        let options = StreamReadOptions::default()
            .group(GROUP, &self.settings.consumer)
            .count(count);
        if self.commands.is_cluster() {
            return self.read_each_shard("0", &options, true).await;
        }
        let ids = vec!["0"; self.keys.len()];
        let mut conn = self.commands.clone();
        let reply: Option<StreamReadReply> = conn.xread_options(&self.keys, &ids, &options).await?;
        Ok(self.entries(reply, true))
    }

    /// One `XREADGROUP` per shard from `id`, all at once (a cluster).
    async fn read_each_shard(
        &self,
        id: &str,
        options: &StreamReadOptions,
        came_back: bool,
    ) -> RedisResult<Vec<Entry>> {
        let replies = self
            .each_shard(|key, mut conn| async move {
                conn.xread_options::<_, _, Option<StreamReadReply>>(&[key], &[id], options)
                    .await
            })
            .await?;
        Ok(replies
            .into_iter()
            .flat_map(|reply| self.entries(reply, came_back))
            .collect())
    }

    /// `command` on every shard's key, all at once, each on its own slot's node; the
    /// answers in shard order.
    async fn each_shard<'a, T, F, Fut>(&'a self, command: F) -> RedisResult<Vec<T>>
    where
        F: Fn(&'a str, RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        futures_util::future::try_join_all(
            self.keys
                .iter()
                .map(|key| command(key, self.commands.clone())),
        )
        .await
    }

    fn entries(&self, reply: Option<StreamReadReply>, came_back: bool) -> Vec<Entry> {
        let mut entries = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(shard) = self.shard_of(&stream.key) else {
                continue;
            };
            entries.extend(
                stream
                    .ids
                    .into_iter()
                    .filter_map(|id| entry(shard, id, came_back)),
            );
        }
        entries
    }

    fn shard_of(&self, key: &str) -> Option<u16> {
        self.keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// `XAUTOCLAIM` on every shard from `cursors[shard]`, up to `count` each: entries pending
    /// longer than `KURZ_ANALYTICS_CLAIM_IDLE_MS` become this consumer's. Returns them, and how many
    /// pending entries were found trimmed from their stream (Redis drops those from the
    /// pending list itself). The cursors move on; a cursor back at `0-0` starts over.
    pub async fn claim(
        &self,
        cursors: &mut [String],
        count: usize,
    ) -> RedisResult<(Vec<Entry>, usize)> {
        let idle = self.settings.claim_idle.as_millis() as u64;
        let commands: Vec<redis::Cmd> = self
            .keys
            .iter()
            .zip(cursors.iter())
            .map(|(key, cursor)| {
                redis::Cmd::xautoclaim_options(
                    key,
                    GROUP,
                    &self.settings.consumer,
                    idle,
                    cursor,
                    StreamAutoClaimOptions::default().count(count),
                )
            })
            .collect();
        let replies: Vec<StreamAutoClaimReply> = self.commands.query_all(commands).await?;
        let (mut entries, mut trimmed) = (Vec::new(), 0);
        for ((shard, reply), cursor) in (0u16..).zip(replies).zip(cursors.iter_mut()) {
            *cursor = reply.next_stream_id;
            trimmed += reply.deleted_ids.len();
            entries.extend(
                reply
                    .claimed
                    .into_iter()
                    .filter_map(|id| entry(shard, id, true)),
            );
        }
        Ok((entries, trimmed))
    }

    /// `XACK`s `entries`, one command per shard, in one round trip.
    pub async fn ack(&self, entries: &[Entry]) -> RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut acks = Vec::new();
        for (shard, key) in (0u16..).zip(&self.keys) {
            let ids: Vec<String> = entries
                .iter()
                .filter(|e| e.shard == shard)
                .map(|e| e.id.to_string())
                .collect();
            if !ids.is_empty() {
                acks.push(redis::Cmd::xack(key, GROUP, &ids));
            }
        }
        self.commands.query_all::<()>(acks).await.map(drop)
    }

    /// Every shard's group state (`None` for a shard whose group is gone: Redis lost its
    /// data). `XINFO GROUPS` comes before `XPENDING` (one pipeline, run in order): an entry
    /// delivered between the two is newer than the last delivered id read first, so
    /// `settled_before` never passes an entry that is pending.
    pub async fn groups(&self) -> RedisResult<Vec<Option<GroupState>>> {
        let replies: Vec<Value> = if self.commands.is_cluster() {
            // A pipeline per shard: its two commands share the key's slot, and stay in order.
            let per_shard = self
                .each_shard(|key, mut conn| async move {
                    redis::pipe()
                        .xinfo_groups(key)
                        .xpending(key, GROUP)
                        .query_async::<Vec<Value>>(&mut conn)
                        .await
                })
                .await?;
            per_shard.into_iter().flatten().collect()
        } else {
            let mut pipe = redis::pipe();
            for key in &self.keys {
                pipe.xinfo_groups(key).xpending(key, GROUP);
            }
            let mut conn = self.commands.clone();
            pipe.query_async(&mut conn).await?
        };
        let mut states = Vec::with_capacity(self.keys.len());
        let mut replies = replies.into_iter();
        while let (Some(info), Some(pending)) = (replies.next(), replies.next()) {
            let info: StreamInfoGroupsReply = redis::from_redis_value(info)?;
            let pending: StreamPendingReply = redis::from_redis_value(pending)?;
            states.push(group_state(&info, &pending)?);
        }
        Ok(states)
    }
}

fn group_state(
    info: &StreamInfoGroupsReply,
    pending: &StreamPendingReply,
) -> RedisResult<Option<GroupState>> {
    let Some(group) = info.groups.iter().find(|g| g.name == GROUP) else {
        return Ok(None);
    };
    let id = |s: &str| {
        s.parse::<EntryId>()
            .map_err(|e| RedisError::from((ErrorKind::Parse, "unreadable entry id", e.to_string())))
    };
    let last_delivered = id(&group.last_delivered_id)?;
    let settled_before = match pending {
        StreamPendingReply::Data(data) if data.count > 0 => id(&data.start_id)?,
        _ => EntryId {
            ms: last_delivered.ms,
            seq: last_delivered.seq.saturating_add(1),
        },
    };
    Ok(Some(GroupState {
        lag: group.lag.map(|n| n as u64),
        pending: pending.count() as u64,
        settled_before,
    }))
}

/// An entry of `shard`, decoded. An id Redis would never send is skipped (it could not be
/// acknowledged either).
fn entry(shard: u16, id: StreamId, came_back: bool) -> Option<Entry> {
    let entry_id = id.id.parse::<EntryId>().ok()?;
    let fields = id.map.iter().filter_map(|(name, value)| match value {
        Value::BulkString(bytes) => Some((name.as_str(), bytes.as_slice())),
        Value::SimpleString(text) => Some((name.as_str(), text.as_bytes())),
        _ => None,
    });
    Some(Entry {
        shard,
        id: entry_id,
        events: events_from_fields(fields),
        came_back,
    })
}

/// Whether a read failed because the group is gone (Redis lost its data): create it again.
pub fn is_no_group(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}
