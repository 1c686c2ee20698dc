//! Failure budgets: count a subject's events (failed authentications, lookups of codes that
//! do not exist) in a fixed window that starts at its first event; once past the budget,
//! the subject is blocked until its window ends.
//!
//! The count lives in Redis (`INCR`, then `PEXPIRE` on the first event, in one script), so
//! every instance shares it. Blocks this instance has seen are also kept in memory (the
//! block list), so a blocked subject's later requests are refused without a round trip, and
//! a hot path that checks every request pays one atomic load while nobody is blocked.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::counts::Decisions;
use crate::headers::{self, Fields};
use crate::local::{BlockList, LocalWindows};
use crate::quota::retry_secs;
use crate::{Budget, Limit, Store};

/// KEYS[1]: the subject's key; ARGV[1]: the window in ms. Returns `{count, ms left}`. The
/// expiry is set when the key has none (its first event), so the window never slides.
const RECORD_LUA: &str = r"
redis.replicate_commands()
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

/// KEYS[1]: the subject's key. Returns `{count, ms left}` and writes nothing.
const PEEK_LUA: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
return {count, redis.call('PTTL', KEYS[1])}
";

static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_LUA));
static PEEK: LazyLock<Script> = LazyLock::new(|| Script::new(PEEK_LUA));

/// What counting one event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The subject is past its budget: refuse it until `reset`.
    pub blocked: bool,
    /// Events in the current window, this one included.
    pub count: u64,
    /// The budget's events per window.
    pub budget: u32,
    /// The budget's window.
    pub window: Duration,
    /// Time until the window ends and the count starts again.
    pub reset: Duration,
    /// When blocked: `reset` rounded up to whole seconds, at least 1 s.
    pub retry_after: Option<Duration>,
    pub policy: Limit,
    /// Counted in-process because Redis was down or slow.
    pub fallback: bool,
}

impl Verdict {
    /// The response headers, as [`crate::Decision::headers`] gives them: the budget is the
    /// quota, what is left of it the remaining.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let used = u32::try_from(self.count).unwrap_or(u32::MAX);
        headers::render(Fields {
            policy: self.policy.name(),
            quota: self.budget,
            window: self.window,
            remaining: self.budget.saturating_sub(used),
            reset: self.reset,
            retry_after: self.retry_after,
        })
    }
}

/// A failure budget shared by every instance: one of [`Limit`], with the budget given per
/// call.
#[derive(Debug)]
pub struct WindowCounter {
    store: Store,
    limit: Limit,
    local: LocalWindows,
    blocks: BlockList,
    decisions: Decisions,
}

impl WindowCounter {
    pub fn new(store: &Store, limit: Limit) -> Self {
        Self {
            store: store.clone(),
            limit,
            local: LocalWindows::new(store.local_capacity()),
            blocks: BlockList::new(store.local_capacity()),
            decisions: Decisions::register(limit),
        }
    }

    /// Whether this instance knows of any blocked subject: one atomic load, for hot paths
    /// that would otherwise work out the subject of every request just to ask.
    pub fn anyone_blocked_here(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// How long `subject` stays blocked, as far as this instance has seen (from its own
    /// [`record`](Self::record) and [`peek`](Self::peek) calls), without I/O. Refusals it
    /// gives are counted as `limited` decisions.
    pub fn blocked_here(&self, subject: &str) -> Option<Duration> {
        let left = self.blocks.get(subject)?;
        self.decisions.count(false, false);
        Some(retry_secs(left))
    }

    /// How long `subject` stays blocked, if it is past its budget: this instance's block
    /// list first, then a read of the shared count (one round trip, no write). Counts no
    /// event.
    pub async fn peek(&self, subject: &str, budget: Budget) -> Option<Duration> {
        if let Some(left) = self.blocked_here(subject) {
            return Some(left);
        }
        let key = self.limit.key(subject);
        let (count, left, fallback) = match self.store.eval::<(i64, i64)>(&PEEK, &key, &[]).await {
            Some((count, left_ms)) => (to_u64(count), millis(left_ms), false),
            None => match self.local.peek(subject) {
                Some((count, left)) => (count, left, true),
                None => (0, Duration::ZERO, true),
            },
        };
        let blocked = count > u64::from(budget.events()) && !left.is_zero();
        self.decisions.count(!blocked, fallback);
        blocked.then(|| self.block(subject, left))
    }

    /// Counts one event of `subject` (one round trip: `INCR`, and `PEXPIRE` on the first).
    pub async fn record(&self, subject: &str, budget: Budget) -> Verdict {
        let key = self.limit.key(subject);
        let window = budget.window_millis();
        let (count, reset, fallback) = match self
            .store
            .eval::<(i64, i64)>(&RECORD, &key, &[window])
            .await
        {
            Some((count, left_ms)) => (to_u64(count), millis(left_ms), false),
            None => {
                let (count, left) = self.local.record(subject, budget);
                (count, left, true)
            }
        };
        let blocked = count > u64::from(budget.events());
        self.decisions.count(!blocked, fallback);
        Verdict {
            blocked,
            count,
            budget: budget.events(),
            window: budget.window(),
            reset,
            retry_after: blocked.then(|| self.block(subject, reset)),
            policy: self.limit,
            fallback,
        }
    }

    /// Remembers a block another instance found (announced over pub/sub, say), so this one
    /// refuses `subject` for `left` without asking Redis.
    pub fn remember_block(&self, subject: &str, left: Duration) {
        if !left.is_zero() {
            self.blocks.insert(subject, left);
        }
    }

    /// Remembers the block here; returns its `Retry-After`.
    fn block(&self, subject: &str, left: Duration) -> Duration {
        self.blocks.insert(subject, left);
        retry_secs(left)
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn millis(value: i64) -> Duration {
    Duration::from_millis(to_u64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_renders_what_is_left_of_the_budget() {
        let verdict = Verdict {
            blocked: false,
            count: 3,
            budget: 20,
            window: Duration::from_secs(60),
            reset: Duration::from_millis(41_500),
            retry_after: None,
            policy: Limit::AuthFailures,
            fallback: false,
        };
        let headers = verdict.headers();
        assert!(headers.contains(&("ratelimit-policy", "\"auth_failures\";q=20;w=60".into())));
        assert!(headers.contains(&("ratelimit", "\"auth_failures\";r=17;t=42".into())));
        assert!(!headers.iter().any(|(name, _)| *name == "retry-after"));

        let blocked = Verdict {
            blocked: true,
            count: 25,
            retry_after: Some(Duration::from_secs(42)),
            ..verdict
        };
        let headers = blocked.headers();
        assert!(headers.contains(&("x-ratelimit-remaining", "0".into())));
        assert!(headers.contains(&("retry-after", "42".into())));
    }
}
