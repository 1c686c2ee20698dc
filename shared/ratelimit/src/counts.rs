//! The decision counters of one limiter, registered once: looking a labelled series up in
//! the recorder on every call hashes and allocates its labels.

use kurz_telemetry::metrics::names;
use metrics::Counter;

use crate::Limit;

#[derive(Clone)]
pub(crate) struct Decisions {
    allowed: Counter,
    limited: Counter,
    fallback: Counter,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions").finish_non_exhaustive()
    }
}

impl Decisions {
    pub(crate) fn register(limit: Limit) -> Self {
        let name = limit.name();
        Self {
            allowed: metrics::counter!(names::RATELIMIT_DECISIONS, "limit" => name, "result" => "allowed"),
            limited: metrics::counter!(names::RATELIMIT_DECISIONS, "limit" => name, "result" => "limited"),
            fallback: metrics::counter!(names::RATELIMIT_FALLBACK_DECISIONS, "limit" => name),
        }
    }

    /// One decision; `fallback` when it was made in-process instead of in Redis.
    pub(crate) fn count(&self, allowed: bool, fallback: bool) {
        if allowed {
            self.allowed.increment(1);
        } else {
            self.limited.increment(1);
        }
        if fallback {
            self.fallback.increment(1);
        }
    }
}
