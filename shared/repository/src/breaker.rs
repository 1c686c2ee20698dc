//! The circuit breaker in front of PostgreSQL: one per process per database, shared by every
//! call the process makes.
//!
//! Words: in this project **"open" means calls are refused** (as in an open electrical
//! circuit, which carries no current), "closed" means calls flow, and "half-open" means a
//! bounded number of probe calls may test whether PostgreSQL is back. (linkerd uses "open"
//! the other way round; we do not.)
//!
//! Only availability failures count ([`RepoError::counts_against_breaker`]): refused, reset or
//! broken connections, pool, connect and statement timeouts, server shutdown. A unique
//! violation, a missing row or bad input means PostgreSQL answered, which counts as success.
//!
//! When to open and for how long comes from `failsafe`'s consecutive-failures policy with
//! exponential backoff: `failures` availability failures in a row open the breaker for the
//! backoff's next period (`backoff_start`, doubling up to `backoff_max`); a success resets the
//! count and, after a probe, the backoff. The state machine around it is ours, for two reasons:
//! failsafe's own admits every concurrent call while half-open (we admit `probes` at most), and
//! it reads the system clock, while ours reads tokio's, so tests run it on paused time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use failsafe::FailurePolicy;
use failsafe::backoff::{self, Exponential};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use kurz_settings::BreakerSettings;
use kurz_telemetry::metrics::names;
use tokio::time::Instant;

use crate::error::RepoError;

/// The breaker's state, as readiness checks and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused at once.
    Open,
    /// A bounded number of probe calls may pass.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `kurz_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

struct Inner {
    name: &'static str,
    probes: usize,
    shared: Mutex<Shared>,
}

struct Shared {
    state: State,
    policy: ConsecutiveFailures<Exponential>,
}

enum State {
    Closed,
    Open { until: Instant, period: Duration },
    HalfOpen { period: Duration, probing: usize },
}

/// Leave to make one call. A probe's slot is given back when the permit is settled or dropped
/// (a cancelled call must not hold a slot forever).
#[derive(Debug)]
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// `name` appears in the transition logs (`postgres`).
    pub fn new(name: &'static str, settings: &BreakerSettings) -> Self {
        let backoff = backoff::exponential(settings.backoff_start, settings.backoff_max);
        Self {
            inner: Arc::new(Inner {
                name,
                probes: settings.probes,
                shared: Mutex::new(Shared {
                    state: State::Closed,
                    policy: failure_policy::consecutive_failures(settings.failures, backoff),
                }),
            }),
        }
    }

    /// The state now (an open breaker whose period is over reports half-open).
    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until, .. } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Sets the state gauge (also set on every transition; an open period that simply ran
    /// out shows as half-open only when sampled).
    pub fn record_state(&self) {
        metrics::gauge!(names::BREAKER_STATE).set(self.state().gauge_value());
    }

    /// Runs `call` if the breaker admits it, and records its outcome. Refused calls fail at once
    /// with [`RepoError::CircuitOpen`] and never start `call`.
    pub async fn call<T, F>(&self, call: F) -> Result<T, RepoError>
    where
        F: Future<Output = Result<T, RepoError>>,
    {
        let permit = match self.admit() {
            Ok(permit) => permit,
            Err(refused) => {
                metrics::counter!(names::BREAKER_REJECTIONS).increment(1);
                // A span of its own, so a trace shows that PostgreSQL was never asked.
                tracing::info_span!("breaker rejected", breaker = self.inner.name)
                    .in_scope(|| tracing::debug!("call refused: circuit breaker open"));
                return Err(refused);
            }
        };
        let result = call.await;
        let failed = result
            .as_ref()
            .is_err_and(RepoError::counts_against_breaker);
        permit.settle(failed);
        result
    }

    fn admit(&self) -> Result<Permit<'_>, RepoError> {
        let mut shared = self.lock();
        let probe = match shared.state {
            State::Closed => false,
            State::Open { until, period } => {
                if Instant::now() < until {
                    return Err(RepoError::CircuitOpen);
                }
                self.transit(&mut shared, State::HalfOpen { period, probing: 0 });
                true
            }
            State::HalfOpen { .. } => true,
        };
        if probe {
            let State::HalfOpen { probing, .. } = &mut shared.state else {
                unreachable!("probes are only admitted half-open")
            };
            if *probing >= self.inner.probes {
                return Err(RepoError::CircuitOpen);
            }
            *probing += 1;
        }
        Ok(Permit {
            breaker: self,
            probe,
        })
    }

    fn record(&self, probe: bool, failed: bool) {
        let mut shared = self.lock();
        if probe {
            shared.release_probe();
        }
        match (&shared.state, failed) {
            (State::Closed, false) => shared.policy.record_success(),
            (State::Closed, true) => {
                if let Some(period) = shared.policy.mark_dead_on_failure() {
                    self.open(&mut shared, period);
                }
            }
            (&State::HalfOpen { period, .. }, true) if probe => {
                // Still down: open again for the next, longer period.
                let next = shared.policy.mark_dead_on_failure().unwrap_or(period);
                self.open(&mut shared, next);
            }
            (State::HalfOpen { .. }, false) if probe => {
                shared.policy.revived();
                self.transit(&mut shared, State::Closed);
            }
            // Results of calls admitted before the breaker opened, and of non-probe calls,
            // say nothing about PostgreSQL now.
            _ => {}
        }
    }

    fn open(&self, shared: &mut Shared, period: Duration) {
        let until = Instant::now() + period;
        self.transit(shared, State::Open { until, period });
    }

    fn transit(&self, shared: &mut Shared, to: State) {
        let name = self.inner.name;
        let entered = match &to {
            State::Closed => {
                tracing::info!(breaker = name, "circuit breaker closed: calls flow again");
                BreakerState::Closed
            }
            State::Open { period, .. } => {
                tracing::warn!(
                    breaker = name,
                    period_ms = period.as_millis() as u64,
                    "circuit breaker open: calls are refused"
                );
                BreakerState::Open
            }
            State::HalfOpen { .. } => {
                tracing::info!(breaker = name, "circuit breaker half-open: probing");
                BreakerState::HalfOpen
            }
        };
        metrics::counter!(names::BREAKER_TRANSITIONS, "to" => entered.as_str()).increment(1);
        metrics::gauge!(names::BREAKER_STATE).set(entered.gauge_value());
        shared.state = to;
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every update leaves Shared consistent, so a poisoned lock is safe to reuse.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Shared {
    fn release_probe(&mut self) {
        if let State::HalfOpen { probing, .. } = &mut self.state {
            *probing = probing.saturating_sub(1);
        }
    }
}

impl Permit<'_> {
    fn settle(mut self, failed: bool) {
        let probe = std::mem::take(&mut self.probe);
        self.breaker.record(probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            // Cancelled mid-call: give the slot back without judging PostgreSQL.
            self.breaker.lock().release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn breaker(failures: u32, probes: usize) -> Breaker {
        Breaker::new(
            "test",
            &BreakerSettings {
                failures,
                backoff_start: Duration::from_secs(1),
                backoff_max: Duration::from_secs(4),
                probes,
            },
        )
    }

    fn outage() -> RepoError {
        RepoError::Unavailable("connection refused".into())
    }

    async fn fail(b: &Breaker) -> Result<(), RepoError> {
        b.call(async { Err::<(), _>(outage()) }).await
    }

    async fn succeed(b: &Breaker) -> Result<(), RepoError> {
        b.call(async { Ok(()) }).await
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_the_configured_availability_failures_and_then_refuses_without_calling()
    {
        let b = breaker(3, 1);
        for _ in 0..2 {
            let _ = fail(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);

        let _ = fail(&b).await;

        assert_eq!(b.state(), BreakerState::Open);
        let calls = AtomicUsize::new(0);
        let refused = b
            .call(async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(matches!(refused, Err(RepoError::CircuitOpen)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "a refused call never starts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_as_availability_failures() {
        let b = breaker(2, 1);
        for _ in 0..2 {
            let _ = b
                .call(async { Err::<(), _>(RepoError::Timeout("statement timeout".into())) })
                .await;
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_never_trip_it() {
        let b = breaker(2, 1);
        for _ in 0..10 {
            let _ = b.call(async { Err::<(), _>(RepoError::CodeTaken) }).await;
            let _ = b.call(async { Ok::<_, RepoError>(None::<()>) }).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn only_consecutive_failures_count() {
        let b = breaker(3, 1);
        for _ in 0..5 {
            let _ = fail(&b).await;
            let _ = fail(&b).await;
            let _ = succeed(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_backoff_half_open_admits_at_most_the_configured_probes() {
        let b = breaker(1, 2);
        let _ = fail(&b).await;
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(
            matches!(succeed(&b).await, Err(RepoError::CircuitOpen)),
            "still open before the backoff"
        );
        tokio::time::advance(Duration::from_millis(2)).await;

        // Five concurrent calls that hang until released: two probes pass, three are refused.
        let (release, released) = tokio::sync::watch::channel(false);
        let attempts: Vec<_> = (0..5)
            .map(|_| {
                let (b, mut released) = (b.clone(), released.clone());
                tokio::spawn(async move {
                    b.call(async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<_, RepoError>(())
                    })
                    .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send_replace(true);
        let mut admitted = 0;
        for attempt in attempts {
            match attempt.await.expect("task") {
                Ok(()) => admitted += 1,
                Err(e) => assert!(matches!(e, RepoError::CircuitOpen), "{e:?}"),
            }
        }
        assert_eq!(admitted, 2);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a successful probe closes it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_it_for_a_longer_period() {
        let b = breaker(1, 1);
        let _ = fail(&b).await;
        tokio::time::advance(Duration::from_secs(1) + Duration::from_millis(1)).await;

        let _ = fail(&b).await;

        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1) + Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::Open, "the second period is 2 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(succeed(&b).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_period_is_capped() {
        let b = breaker(1, 1);
        let _ = fail(&b).await;
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(5)).await;
            let _ = fail(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(4) + Duration::from_millis(1)).await;
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "never open longer than the 4 s cap"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_slot_back() {
        let b = breaker(1, 1);
        let _ = fail(&b).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        let hanging = b.call(std::future::pending::<Result<(), RepoError>>());
        let cancelled = tokio::time::timeout(Duration::from_millis(10), hanging).await;
        assert!(cancelled.is_err());

        assert!(succeed(&b).await.is_ok(), "the slot was freed");
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
