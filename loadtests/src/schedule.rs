//! The open-loop schedule and its coordinated-omission correction, as pure functions of time
//! offsets from the start of the run.
//!
//! In open mode request `i` (counting from 0 over the whole run, all connections together) is
//! due at `i / rate` seconds. Its latency is measured from that due ("intended") time, not from
//! when a connection got round to sending it. A load generator that measures from the actual send
//! time waits politely while the server stalls and then records only the one slow request,
//! omitting all the requests that real users would have sent meanwhile: "coordinated omission".
//! Measuring from the intended time charges the stall to every request that was due during it.

use std::time::Duration;

/// When request `index` is due, as an offset from the start of the run.
pub fn intended_offset(index: u64, rate_per_s: f64) -> Duration {
    // Seconds as f64 keep 15 significant digits: sub-nanosecond for any run this tool allows.
    Duration::from_secs_f64(index as f64 / rate_per_s)
}

/// How many requests are due strictly before `window` has passed: the smallest `i` with
/// `intended_offset(i) >= window`. Computed with `intended_offset` itself so that the count and
/// the workers' own timing can never disagree by a rounding error.
pub fn due_before(window: Duration, rate_per_s: f64) -> u64 {
    let mut count = (window.as_secs_f64() * rate_per_s).floor() as u64;
    while count > 0 && intended_offset(count - 1, rate_per_s) >= window {
        count -= 1;
    }
    while intended_offset(count, rate_per_s) < window {
        count += 1;
    }
    count
}

/// The latency a user would see: from when the request was due to when its response was
/// complete. Zero if it completed "before" it was due, which only clock granularity can cause.
pub fn corrected_latency(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

/// Whether a request that started (open mode: was due; closed mode: was sent) at `start` is
/// recorded, i.e. falls after the warm-up.
pub fn is_measured(start: Duration, warmup: Duration) -> bool {
    start >= warmup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_fixed_intervals() {
        assert_eq!(intended_offset(0, 1_000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1_000.0), Duration::from_millis(1));
        assert_eq!(
            intended_offset(2_500, 1_000.0),
            Duration::from_millis(2_500)
        );
        assert_eq!(intended_offset(3, 4.0), Duration::from_millis(750));
    }

    #[test]
    fn due_before_counts_the_requests_inside_a_window() {
        assert_eq!(due_before(Duration::from_secs(1), 100.0), 100);
        assert_eq!(due_before(Duration::ZERO, 100.0), 0);
        assert_eq!(
            due_before(Duration::from_millis(1), 100.0),
            1,
            "request 0 at t=0"
        );
        // 1.2 * 200 is 240.00000000000003 in floating point; a naive ceil would say 241.
        assert_eq!(due_before(Duration::from_millis(1_200), 200.0), 240);
        assert_eq!(due_before(Duration::from_millis(200), 200.0), 40);
        assert_eq!(due_before(Duration::from_secs(10), 3.0), 30);
    }

    #[test]
    fn latency_is_measured_from_the_intended_time() {
        let intended = Duration::from_millis(100);
        assert_eq!(
            corrected_latency(intended, Duration::from_millis(130)),
            Duration::from_millis(30)
        );
        assert_eq!(
            corrected_latency(intended, Duration::from_millis(99)),
            Duration::ZERO
        );
    }

    /// One connection at 100 req/s against a server that answers in 1 ms, except that request 50
    /// takes 1 s. Each request is sent when it is due or, if the connection is still busy, as soon
    /// as the previous response arrives.
    fn simulate_stall() -> (Vec<Duration>, Vec<Duration>) {
        let rate = 100.0;
        let mut free_at = Duration::ZERO;
        let (mut corrected, mut naive) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let intended = intended_offset(i, rate);
            let sent = intended.max(free_at);
            let service = if i == 50 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(1)
            };
            let completed = sent + service;
            free_at = completed;
            corrected.push(corrected_latency(intended, completed));
            naive.push(completed - sent);
        }
        (corrected, naive)
    }

    #[test]
    fn a_stall_shows_in_every_request_that_was_due_during_it() {
        let (corrected, naive) = simulate_stall();
        let slow = |v: &[Duration]| {
            v.iter()
                .filter(|&&d| d >= Duration::from_millis(100))
                .count()
        };
        // Measured from the send time, only the stalled request itself looks slow...
        assert_eq!(slow(&naive), 1);
        // ...but requests 50..=140 were all due during the 1 s stall and waited for it.
        assert!(slow(&corrected) >= 90, "{}", slow(&corrected));
        assert_eq!(corrected[50], Duration::from_millis(1_000));
        assert_eq!(corrected[51], Duration::from_millis(991));
        let max_corrected = corrected.iter().max().copied();
        assert_eq!(max_corrected, Some(Duration::from_millis(1_000)));
    }

    #[test]
    fn warm_up_requests_are_not_measured() {
        let warmup = Duration::from_secs(1);
        assert!(!is_measured(Duration::from_millis(999), warmup));
        assert!(is_measured(Duration::from_secs(1), warmup));
    }
}
