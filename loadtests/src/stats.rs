//! Recording results. Each worker has its own [`Recorder`], so the request path takes no lock;
//! the recorders are merged once the run is over.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::StatusCode;

use crate::client::TransportError;

/// Significant digits of the run's latency histogram: 0.1% resolution at any magnitude.
const SIGFIG: u8 = 3;
/// Significant digits of the per-second histograms: 1% is plenty for a p99 over time, and keeps
/// each small (workers x seconds of them are kept).
const SIGFIG_PER_SECOND: u8 = 2;

/// One second of the measured window.
#[derive(Debug, Clone)]
pub struct Second {
    /// Latencies in µs of the responses completed in this second.
    pub latency: Histogram<u64>,
    pub responses: u64,
    pub errors: u64,
}

impl Second {
    fn new() -> Self {
        Self {
            latency: empty_histogram(SIGFIG_PER_SECOND),
            responses: 0,
            errors: 0,
        }
    }
}

/// Results of the measured window (warm-up excluded).
#[derive(Debug, Clone)]
pub struct Recorder {
    measure_start: Instant,
    last_second: usize,
    /// Latencies in µs of every response, whatever its status.
    pub latency: Histogram<u64>,
    /// Open mode: how late in µs each request was sent after it was due, because every
    /// connection was busy or the generator itself was slow to wake.
    pub send_lag: Histogram<u64>,
    /// By completion time; the last one also takes responses that complete after the window.
    pub seconds: Vec<Second>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub expected: u64,
    pub unexpected: u64,
}

impl Recorder {
    /// A recorder for a window of `duration` starting at `measure_start`.
    pub fn new(measure_start: Instant, duration: Duration) -> Self {
        let seconds = duration.as_secs_f64().ceil().max(1.0) as usize;
        Self {
            measure_start,
            last_second: seconds - 1,
            latency: empty_histogram(SIGFIG),
            send_lag: empty_histogram(SIGFIG),
            seconds: Vec::new(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            expected: 0,
            unexpected: 0,
        }
    }

    pub fn response(
        &mut self,
        completed: Instant,
        latency: Duration,
        status: StatusCode,
        expected: bool,
    ) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        record(&mut self.latency, micros);
        *self.statuses.entry(status.as_u16()).or_default() += 1;
        if expected {
            self.expected += 1;
        } else {
            self.unexpected += 1;
        }
        let second = self.second(completed);
        record(&mut second.latency, micros);
        second.responses += 1;
    }

    /// Records that a request due at `intended` was sent at `sent` (open mode).
    pub fn send_lag(&mut self, intended: Instant, sent: Instant) {
        let lag = sent.saturating_duration_since(intended);
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        record(&mut self.send_lag, micros);
    }

    pub fn error(&mut self, completed: Instant, error: TransportError) {
        *self.errors.entry(error.name()).or_default() += 1;
        self.second(completed).errors += 1;
    }

    pub fn responses(&self) -> u64 {
        self.latency.len()
    }

    pub fn transport_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other`'s results to these.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms resize themselves, so adding cannot run out of range.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
        for (index, theirs) in other.seconds.iter().enumerate() {
            let ours = self.second_at(index);
            let _ = ours.latency.add(&theirs.latency);
            ours.responses += theirs.responses;
            ours.errors += theirs.errors;
        }
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        for (name, count) in &other.errors {
            *self.errors.entry(name).or_default() += count;
        }
        self.expected += other.expected;
        self.unexpected += other.unexpected;
    }

    fn second(&mut self, completed: Instant) -> &mut Second {
        let offset = completed.saturating_duration_since(self.measure_start);
        let index = (offset.as_secs() as usize).min(self.last_second);
        self.second_at(index)
    }

    fn second_at(&mut self, index: usize) -> &mut Second {
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::new);
        }
        &mut self.seconds[index]
    }
}

/// Records `value`, growing the histogram as needed. (`saturating_record` would not do: it
/// clamps to the current top instead of growing, and a fresh histogram's top is about 2 ms.)
fn record(histogram: &mut Histogram<u64>, value: u64) {
    if histogram.record(value).is_err() {
        // Only a value beyond what any histogram can hold (hundreds of years in µs) gets here.
        histogram.saturating_record(value);
    }
}

/// An auto-resizing histogram: it grows to the largest value seen, so a stalled server's
/// latencies are recorded exactly rather than clipped at a guessed maximum.
fn empty_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).unwrap_or_else(|_| unreachable!("2 and 3 significant digits are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_land_in_the_second_they_complete_in() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start, Duration::from_secs(3));
        let ok = StatusCode::FOUND;
        recorder.response(start, Duration::from_micros(100), ok, true);
        recorder.response(
            start + Duration::from_millis(1_500),
            Duration::from_micros(200),
            ok,
            true,
        );
        // After the window: folded into the last second rather than making a near-empty one.
        recorder.response(
            start + Duration::from_secs(7),
            Duration::from_micros(300),
            ok,
            true,
        );
        recorder.error(
            start + Duration::from_millis(2_100),
            TransportError::Timeout,
        );

        let per_second: Vec<(u64, u64)> = recorder
            .seconds
            .iter()
            .map(|s| (s.responses, s.errors))
            .collect();
        assert_eq!(per_second, [(1, 0), (1, 0), (1, 1)]);
        assert_eq!(recorder.responses(), 3);
        assert_eq!(recorder.errors.get("timeout"), Some(&1));
    }

    #[test]
    fn merging_adds_everything_up() {
        let start = Instant::now();
        let mut a = Recorder::new(start, Duration::from_secs(2));
        let mut b = Recorder::new(start, Duration::from_secs(2));
        a.response(start, Duration::from_micros(100), StatusCode::FOUND, true);
        b.response(
            start + Duration::from_secs(1),
            Duration::from_micros(900),
            StatusCode::NOT_FOUND,
            false,
        );
        b.error(start, TransportError::Connect);

        a.merge(&b);

        assert_eq!(a.responses(), 2);
        assert_eq!(a.latency.max(), 900);
        assert_eq!(a.statuses.get(&302), Some(&1));
        assert_eq!(a.statuses.get(&404), Some(&1));
        assert_eq!((a.expected, a.unexpected), (1, 1));
        assert_eq!(a.transport_errors(), 1);
        assert_eq!(a.seconds.len(), 2);
    }

    #[test]
    fn long_latencies_are_recorded_exactly_not_clamped() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start, Duration::from_secs(1));
        recorder.response(start, Duration::from_secs(30), StatusCode::FOUND, true);
        recorder.response(start, Duration::from_micros(50), StatusCode::FOUND, true);
        let max = recorder.latency.max();
        assert!((29_970_000..=30_030_000).contains(&max), "{max}");
        assert_eq!(recorder.latency.min(), 50);
    }
}
