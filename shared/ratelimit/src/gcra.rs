//! Request rate limits: GCRA (the generic cell rate algorithm) in one Lua script call.
//!
//! One key per subject holds its "theoretical arrival time" (TAT): when the subject would be
//! back to a whole quota if it sent nothing more. A request is allowed while the TAT, moved
//! on by one request's cost (`period / limit`), stays within the burst tolerance
//! (`burst * cost`) of now. Modelled on rwz/redis-gcra (MIT). The script reads the clock
//! with Redis `TIME`, so instances whose clocks differ still share one budget, and works in
//! whole microseconds, formatted with `%d`: Lua would print a float TAT with 14 digits and
//! lose its last microseconds.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::counts::Decisions;
use crate::headers::{self, Fields};
use crate::local::LocalLimiters;
use crate::quota::retry_secs;
use crate::{Limit, Quota, Store};

/// KEYS[1]: the subject's key. ARGV: one request's cost and the burst tolerance, in µs, and
/// how many requests this call takes (all or none: a bulk create of 50 items is 50 requests).
/// Returns `{allowed, remaining, µs until that many are allowed, µs until whole again}`; a
/// refusal takes nothing, and its `remaining` is what could still be taken now.
const GCRA_LUA: &str = r"
redis.replicate_commands()
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission * count
local allow_at = new_tat - tolerance
if now < allow_at then
  local left = math.floor((tolerance - (tat - now)) / emission)
  if left < 0 then left = 0 end
  return {0, left, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, math.floor((tolerance - (new_tat - now)) / emission), 0, new_tat - now}
";

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

/// The answer to "may this subject make one more request?". Always given: with Redis away
/// it comes from the in-process fallback (`fallback` is then true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The quota's limit (requests per period).
    pub limit: u32,
    /// Whole requests the subject may still make right now.
    pub remaining: u32,
    /// Time until the subject has its whole quota back, if it sends nothing more.
    pub reset: Duration,
    /// When refused: time until one request is allowed, rounded up to whole seconds, at
    /// least 1 s. `None` when allowed.
    pub retry_after: Option<Duration>,
    /// The quota's period, the `w` of `RateLimit-Policy`.
    pub window: Duration,
    pub policy: Limit,
    /// Made in-process because Redis was down or slow.
    pub fallback: bool,
}

impl Decision {
    /// The response headers (see [`crate::headers`]): `RateLimit-Policy`, `RateLimit`,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds from now),
    /// and `Retry-After` when refused. Lowercase names.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        headers::render(Fields {
            policy: self.policy.name(),
            quota: self.limit,
            window: self.window,
            remaining: self.remaining,
            reset: self.reset,
            retry_after: self.retry_after,
        })
    }
}

/// A request rate limit shared by every instance: one of [`Limit`], with the quota given per
/// call, so subjects may have quotas of their own (a per-key override).
#[derive(Debug)]
pub struct Limiter {
    store: Store,
    limit: Limit,
    local: LocalLimiters,
    decisions: Decisions,
}

impl Limiter {
    pub fn new(store: &Store, limit: Limit) -> Self {
        Self {
            store: store.clone(),
            limit,
            local: LocalLimiters::new(store.local_capacity()),
            decisions: Decisions::register(limit),
        }
    }

    /// Takes one request from `subject`'s quota (an API key id, a client IP subject from
    /// `kurz_http::client_ip::subject`): one Redis round trip, or none while Redis is being
    /// skipped after a failure.
    pub async fn check(&self, subject: &str, quota: Quota) -> Decision {
        self.check_n(subject, quota, 1).await
    }

    /// Takes `count` requests at once, or none: allowed only if all of them fit now, and a
    /// refusal's `retry_after` is when all of them will. A `count` above the quota's burst
    /// never fits (callers check [`Quota::burst`] first); 0 counts as 1.
    pub async fn check_n(&self, subject: &str, quota: Quota, count: u32) -> Decision {
        let count = count.max(1);
        let emission = quota.emission_micros();
        let tolerance = emission.saturating_mul(u64::from(quota.burst()));
        let key = self.limit.key(subject);
        let args = [emission, tolerance, u64::from(count)];
        let decision = match self
            .store
            .eval::<(i64, i64, i64, i64)>(&GCRA, &key, &args)
            .await
        {
            Some((allowed, remaining, wait, reset)) => self.decision(
                quota,
                allowed == 1,
                u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                micros(wait),
                micros(reset),
                false,
            ),
            None => {
                let local = self.local.check(subject, quota, count);
                self.decision(
                    quota,
                    local.allowed,
                    local.remaining,
                    local.wait,
                    local.reset,
                    true,
                )
            }
        };
        self.decisions.count(decision.allowed, decision.fallback);
        decision
    }

    fn decision(
        &self,
        quota: Quota,
        allowed: bool,
        remaining: u32,
        wait: Duration,
        reset: Duration,
        fallback: bool,
    ) -> Decision {
        Decision {
            allowed,
            limit: quota.limit(),
            remaining: remaining.min(quota.burst()),
            reset,
            retry_after: (!allowed).then(|| retry_secs(wait)),
            window: quota.period(),
            policy: self.limit,
            fallback,
        }
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}
