//! In-process state: the fallbacks used while Redis is away, and the block list.
//!
//! Memory is bounded twice. Each map holds at most `Store::with_local_capacity` subjects
//! (moka evicts the least used past that). And each entry expires on its own: a GCRA
//! limiter once it has been idle for as long as its quota takes to refill (then it is
//! full again, so dropping it changes no decision), a window count when its window ends.
//! One moka map of direct governor limiters, each with its subject's quota, rather than
//! governor's keyed limiter: quotas differ per subject (per-key overrides), and the keyed
//! one needs `retain_recent()` called on a timer or it grows forever.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use moka::Expiry;
use moka::sync::Cache;

use crate::{Budget, Quota};

type Governor =
    governor::RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One subject's in-process GCRA limiter.
struct LocalLimiter {
    quota: Quota,
    limiter: Governor,
}

/// What an in-process GCRA check says, before it becomes a `Decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalCheck {
    pub allowed: bool,
    pub remaining: u32,
    pub reset: Duration,
    pub wait: Duration,
}

/// In-process GCRA limiters by subject, at the same rates as in Redis.
pub(crate) struct LocalLimiters {
    by_subject: Cache<String, Arc<LocalLimiter>>,
}

impl LocalLimiters {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            by_subject: Cache::builder()
                .max_capacity(capacity)
                .expire_after(IdleUntilRestored)
                .build(),
        }
    }

    /// Takes `count` cells at once, or none (governor's `check_n`).
    pub(crate) fn check(&self, subject: &str, quota: Quota, count: u32) -> LocalCheck {
        let mut entry = self
            .by_subject
            .get_with_by_ref(subject, || LocalLimiter::new(quota));
        if entry.quota != quota {
            // The subject's quota changed (a new override): start it afresh at the new rate.
            entry = LocalLimiter::new(quota);
            self.by_subject
                .insert(subject.to_owned(), Arc::clone(&entry));
        }
        let emission = Duration::from_micros(quota.emission_micros());
        let cells = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
        let Ok(checked) = entry.limiter.check_n(cells) else {
            // More cells than the burst never fit (callers check first): refused, as if the
            // whole burst had to come back.
            return LocalCheck {
                allowed: false,
                remaining: 0,
                reset: quota.restore_time(),
                wait: quota.restore_time(),
            };
        };
        match checked {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                LocalCheck {
                    allowed: true,
                    remaining,
                    reset: emission * quota.burst().saturating_sub(remaining),
                    wait: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(entry.limiter.clock().now());
                LocalCheck {
                    allowed: false,
                    remaining: 0,
                    // The last of the burst comes back `burst - 1` emissions after the next.
                    reset: wait + emission * quota.burst().saturating_sub(1),
                    wait,
                }
            }
        }
    }
}

impl LocalLimiter {
    fn new(quota: Quota) -> Arc<Self> {
        let burst = NonZeroU32::new(quota.burst()).unwrap_or(NonZeroU32::MIN);
        let gov = governor::Quota::with_period(Duration::from_micros(quota.emission_micros()))
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Arc::new(Self {
            quota,
            limiter: governor::RateLimiter::direct(gov).with_middleware(),
        })
    }
}

/// A limiter is dropped once idle for its quota's refill time: by then it is full again.
struct IdleUntilRestored;

impl Expiry<String, Arc<LocalLimiter>> for IdleUntilRestored {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Arc<LocalLimiter>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.quota.restore_time())
    }

    fn expire_after_read(
        &self,
        _: &String,
        value: &Arc<LocalLimiter>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.quota.restore_time())
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Arc<LocalLimiter>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.quota.restore_time())
    }
}

/// One subject's in-process window count.
struct LocalWindow {
    window: Duration,
    ends: Instant,
    count: AtomicU64,
}

/// In-process window counts by subject.
pub(crate) struct LocalWindows {
    by_subject: Cache<String, Arc<LocalWindow>>,
}

impl LocalWindows {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            by_subject: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilWindowEnds)
                .build(),
        }
    }

    /// Counts one event: the count so far and the time left in the window.
    pub(crate) fn record(&self, subject: &str, budget: Budget) -> (u64, Duration) {
        let now = Instant::now();
        let mut entry = self
            .by_subject
            .get_with_by_ref(subject, || LocalWindow::new(budget, now));
        if entry.ends <= now || entry.window != budget.window() {
            entry = LocalWindow::new(budget, now);
            self.by_subject
                .insert(subject.to_owned(), Arc::clone(&entry));
        }
        let count = entry.count.fetch_add(1, Ordering::Relaxed) + 1;
        (count, entry.ends.saturating_duration_since(now))
    }

    /// The count and the time left, without counting; `None` outside a window.
    pub(crate) fn peek(&self, subject: &str) -> Option<(u64, Duration)> {
        let entry = self.by_subject.get(subject)?;
        let left = entry.ends.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (entry.count.load(Ordering::Relaxed), left))
    }
}

impl LocalWindow {
    fn new(budget: Budget, now: Instant) -> Arc<Self> {
        Arc::new(Self {
            window: budget.window(),
            ends: now + budget.window(),
            count: AtomicU64::new(0),
        })
    }
}

/// A window count is dropped when its window ends.
struct UntilWindowEnds;

impl Expiry<String, Arc<LocalWindow>> for UntilWindowEnds {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Arc<LocalWindow>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ends.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Arc<LocalWindow>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ends.saturating_duration_since(updated_at))
    }
}

/// Subjects this process knows to be blocked, and until when. Checked on every request of a
/// hot path, so the common case, nobody blocked, is one atomic load; blocked subjects are
/// few (scanners, password guessers), so a plain map behind a lock is enough for the rest.
pub(crate) struct BlockList {
    /// `blocks.until.len()`, readable without the lock.
    len: AtomicUsize,
    capacity: usize,
    blocks: RwLock<Blocks>,
}

#[derive(Default)]
struct Blocks {
    until: HashMap<Box<str>, Instant>,
    /// The latest `until`: past it every block has ended and the map is cleared at once.
    horizon: Option<Instant>,
}

impl BlockList {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            len: AtomicUsize::new(0),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            blocks: RwLock::new(Blocks::default()),
        }
    }

    /// Whether any subject may be blocked (one atomic load).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// How long `subject` stays blocked, if it is.
    pub(crate) fn get(&self, subject: &str) -> Option<Duration> {
        if self.is_empty() {
            return None;
        }
        let now = Instant::now();
        {
            let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
            if blocks.horizon.is_some_and(|h| h > now) {
                let until = *blocks.until.get(subject)?;
                return (until > now).then(|| until - now);
            }
        }
        self.clear_if_over(now);
        None
    }

    /// Blocks `subject` for `left` from now.
    pub(crate) fn insert(&self, subject: &str, left: Duration) {
        let now = Instant::now();
        let until = now + left;
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        if blocks.until.len() >= self.capacity && !blocks.until.contains_key(subject) {
            blocks.until.retain(|_, u| *u > now);
            if blocks.until.len() >= self.capacity {
                // Full of live blocks: this subject is still refused by the shared counter
                // on its next counted event, only not answered from memory.
                return;
            }
        }
        blocks.until.insert(subject.into(), until);
        blocks.horizon = Some(blocks.horizon.map_or(until, |h| h.max(until)));
        self.len.store(blocks.until.len(), Ordering::Relaxed);
    }

    fn clear_if_over(&self, now: Instant) {
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        if blocks.horizon.is_none_or(|h| h <= now) {
            blocks.until.clear();
            blocks.horizon = None;
            self.len.store(0, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for LocalLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiters")
            .field("subjects", &self.by_subject.entry_count())
            .finish()
    }
}

impl std::fmt::Debug for LocalWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWindows")
            .field("subjects", &self.by_subject.entry_count())
            .finish()
    }
}

impl std::fmt::Debug for BlockList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockList")
            .field("blocked", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_limiter_lets_the_burst_through_then_refuses() {
        let limiters = LocalLimiters::new(10);
        let quota = Quota::per_minute(5);
        let checks: Vec<_> = (0..7).map(|_| limiters.check("a", quota, 1)).collect();
        assert!(checks[..5].iter().all(|c| c.allowed), "{checks:?}");
        assert_eq!(checks[0].remaining, 4);
        assert_eq!(checks[4].remaining, 0);
        assert!(!checks[5].allowed && !checks[6].allowed);
        assert!(checks[5].wait > Duration::from_secs(10), "{:?}", checks[5]);
        assert!(
            limiters.check("b", quota, 1).allowed,
            "subjects are separate"
        );
    }

    #[test]
    fn the_local_limiter_takes_several_cells_at_once_or_none() {
        let limiters = LocalLimiters::new(10);
        let quota = Quota::per_minute(10);
        let first = limiters.check("a", quota, 7);
        let refused = limiters.check("a", quota, 4);
        let rest = limiters.check("a", quota, 3);
        assert!(first.allowed && first.remaining == 3, "{first:?}");
        assert!(!refused.allowed, "4 do not fit in 3: {refused:?}");
        assert!(
            rest.allowed && rest.remaining == 0,
            "the refusal took nothing: {rest:?}"
        );
        assert!(
            !limiters.check("b", quota, 11).allowed,
            "more than the burst never fits"
        );
    }

    #[test]
    fn a_new_quota_for_a_subject_starts_afresh() {
        let limiters = LocalLimiters::new(10);
        assert!(limiters.check("a", Quota::per_minute(1), 1).allowed);
        assert!(!limiters.check("a", Quota::per_minute(1), 1).allowed);
        assert!(limiters.check("a", Quota::per_minute(100), 1).allowed);
    }

    #[test]
    fn local_windows_count_per_subject() {
        let windows = LocalWindows::new(10);
        let budget = Budget::per_minute(3);
        let counts: Vec<_> = (0..4).map(|_| windows.record("a", budget).0).collect();
        assert_eq!(counts, [1, 2, 3, 4]);
        assert_eq!(windows.record("b", budget).0, 1);
        let (count, left) = windows.peek("a").expect("in a window");
        assert_eq!(count, 4);
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert_eq!(windows.peek("nobody"), None);
    }

    #[test]
    fn the_block_list_answers_blocked_subjects_only() {
        let blocks = BlockList::new(10);
        assert!(blocks.is_empty());
        assert_eq!(blocks.get("a"), None);
        blocks.insert("a", Duration::from_secs(30));
        assert!(!blocks.is_empty());
        let left = blocks.get("a").expect("blocked");
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
        assert_eq!(blocks.get("b"), None);
    }

    #[test]
    fn the_block_list_empties_itself_once_every_block_ended() {
        let blocks = BlockList::new(10);
        blocks.insert("a", Duration::ZERO);
        assert_eq!(blocks.get("a"), None);
        assert!(
            blocks.is_empty(),
            "cleared on the first look past the horizon"
        );
    }

    #[test]
    fn a_full_block_list_makes_room_from_ended_blocks_only() {
        let blocks = BlockList::new(2);
        blocks.insert("ended", Duration::ZERO);
        blocks.insert("a", Duration::from_secs(30));
        blocks.insert("b", Duration::from_secs(30));
        assert!(blocks.get("b").is_some(), "the ended block made room");
        blocks.insert("c", Duration::from_secs(30));
        assert_eq!(blocks.get("c"), None, "no room among live blocks");
        assert!(blocks.get("a").is_some());
    }
}
