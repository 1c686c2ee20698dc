//! Exponential backoff for a background task that retries (the click shipper, the analytics
//! worker): a pause that doubles from `first` up to `max`, and starts over after a success.
//! No jitter: each process has one such task, so there is no herd to spread.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt, after one more failure.
    pub fn after_failure(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// After a success: no pause, and the next failure starts over from `first`.
    pub fn reset(&mut self) -> Duration {
        self.next = self.first;
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_max_and_start_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
        let first = [backoff.after_failure(), backoff.after_failure()];
        let capped = [backoff.after_failure(), backoff.after_failure()];
        assert_eq!(first, [Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(capped, [Duration::from_secs(3); 2]);
        assert_eq!(backoff.reset(), Duration::ZERO);
        assert_eq!(backoff.after_failure(), Duration::from_secs(1));
    }
}
