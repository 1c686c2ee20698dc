//! What is limited and how much.

use std::time::Duration;

/// Which limit a decision belongs to. It names the `limit` label of the metrics, the policy of
/// the `RateLimit` headers and the first part of the Redis key, so it is a fixed set: a label
/// that clients could vary would make unbounded series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Requests per API key (create API).
    ApiKey,
    /// Requests without a key, per client IP (create API).
    Anonymous,
    /// Failed authentications per client IP (create API).
    AuthFailures,
    /// Lookups of codes that do not exist, per client IP (redirect).
    Scan,
}

impl Limit {
    /// The `limit` label and the header policy name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Anonymous => "anonymous",
            Self::AuthFailures => "auth_failures",
            Self::Scan => "scan",
        }
    }

    /// The Redis key of `subject`: `kurz:rl:{key:42}`, `kurz:rl:{anon:203.0.113.9}`. The whole
    /// name is the hash tag, so every script touches exactly one key in one cluster slot.
    pub fn key(self, subject: &str) -> String {
        let prefix = match self {
            Self::ApiKey => "key",
            Self::Anonymous => "anon",
            Self::AuthFailures => "authfail",
            Self::Scan => "scan",
        };
        format!("kurz:rl:{{{prefix}:{subject}}}")
    }
}

/// `limit` requests per `period`, of which up to `burst` may come at once (GCRA).
///
/// The default burst is the limit: "600 a minute" lets 600 through in a quick burst, then
/// one every 100 ms. A smaller burst spreads the same rate more evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    period: Duration,
    burst: u32,
}

impl Quota {
    /// `limit` requests per `period`. A limit of 0 counts as 1 and a period under 1 ms as
    /// 1 ms: refusing everything is not a rate limit, and callers check their settings.
    pub fn new(limit: u32, period: Duration) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            period: period.max(Duration::from_millis(1)),
            burst: limit,
        }
    }

    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// Up to `burst` requests at once (at least 1).
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one request "costs", in whole microseconds, rounded up so that rounding
    /// never lets more through than the quota says.
    pub(crate) fn emission_micros(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        period.div_ceil(u64::from(self.limit)).max(1)
    }

    /// How long an idle subject takes to get its whole burst back.
    pub(crate) fn restore_time(&self) -> Duration {
        Duration::from_micros(self.emission_micros().saturating_mul(u64::from(self.burst)))
    }
}

/// At most `events` events per `window` per subject; past that, the subject is blocked until
/// its window ends (a fixed window that starts at the subject's first event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Budget {
    events: u32,
    window: Duration,
}

impl Budget {
    /// A window under 1 ms counts as 1 ms.
    pub fn new(events: u32, window: Duration) -> Self {
        Self {
            events,
            window: window.max(Duration::from_millis(1)),
        }
    }

    pub fn per_minute(events: u32) -> Self {
        Self::new(events, Duration::from_secs(60))
    }

    pub fn events(&self) -> u32 {
        self.events
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn window_millis(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` says.
pub(crate) fn retry_secs(wait: Duration) -> Duration {
    Duration::from_secs(ceil_secs(wait).max(1))
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_hash_tag_per_subject() {
        assert_eq!(Limit::ApiKey.key("42"), "kurz:rl:{key:42}");
        assert_eq!(
            Limit::Anonymous.key("203.0.113.9"),
            "kurz:rl:{anon:203.0.113.9}"
        );
        assert_eq!(
            Limit::Scan.key("2001:db8::/64"),
            "kurz:rl:{scan:2001:db8::/64}"
        );
    }

    #[test]
    fn a_request_costs_the_period_over_the_limit_rounded_up() {
        assert_eq!(Quota::per_minute(600).emission_micros(), 100_000);
        assert_eq!(Quota::per_minute(7).emission_micros(), 8_571_429);
        assert_eq!(
            Quota::per_minute(30).restore_time(),
            Duration::from_secs(60)
        );
        assert_eq!(
            Quota::per_minute(30).with_burst(10).restore_time(),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn zero_limits_are_bent_to_one() {
        let quota = Quota::new(0, Duration::ZERO).with_burst(0);
        assert_eq!((quota.limit(), quota.burst()), (1, 1));
        assert_eq!(quota.period(), Duration::from_millis(1));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_secs(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(retry_secs(Duration::from_millis(1)), Duration::from_secs(1));
        assert_eq!(
            retry_secs(Duration::from_millis(1_001)),
            Duration::from_secs(2)
        );
        assert_eq!(retry_secs(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
