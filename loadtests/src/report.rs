//! The report of a run: what was asked, what came back. Printed as text and written as JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Mode, Scenario};
use crate::stats::Recorder;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    /// The status each kind of request should get in this scenario ("redirect", "create").
    pub expected_status: BTreeMap<&'static str, &'static str>,
    pub summary: Summary,
    /// The latency distribution, finest towards the tail: the points of the percentile plot.
    pub percentiles: Vec<PercentilePoint>,
    /// One entry per second of the measured window.
    pub timeseries: Vec<TimePoint>,
}

/// The run's settings as used (defaults filled in).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub mode: Mode,
    pub scenario: Scenario,
    pub target: Option<String>,
    pub create_target: Option<String>,
    /// Whether creates carried an API key (`--api-key`); the key itself is never written.
    pub api_key: bool,
    pub connections: u32,
    /// Open mode only: requests per second, over all connections.
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub max_requests: u64,
    pub timeout_s: f64,
    pub codes_file: Option<String>,
    pub codes_loaded: usize,
    /// How many codes redirect-hot actually drew from (`--hot-codes`, or fewer if the list is
    /// shorter).
    pub hot_codes: usize,
    pub zipf_s: f64,
    /// The bulk scenario: links per request (its links/s is `throughput_rps` times this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_items: Option<u32>,
    pub run_id: String,
    pub rng_seed: u64,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests of the measured window: responses plus transport errors.
    pub requests: u64,
    /// Requests answered, whatever the status.
    pub responses: u64,
    pub expected_responses: u64,
    pub unexpected_responses: u64,
    pub transport_errors: u64,
    /// "connect", "timeout", "io".
    pub transport_errors_by_kind: BTreeMap<&'static str, u64>,
    pub status_counts: BTreeMap<u16, u64>,
    /// From the end of the warm-up to the last response.
    pub elapsed_s: f64,
    /// Responses per second over `elapsed_s`.
    pub throughput_rps: f64,
    /// Open mode: requests that were due before the end of the run but never sent, because
    /// every connection was still busy. Non-zero means the server could not keep up with the
    /// rate (their absence is not hidden: the requests that were sent late carry the delay).
    pub unsent_behind_schedule: Option<u64>,
    /// Over all responses of the measured window; open mode measures from the intended send time.
    pub latency_us: Latency,
    /// Open mode: how late requests were sent after they were due, part of `latency_us`. Large
    /// values while the server is fast mean the generator is the bottleneck (too few
    /// connections, or too little CPU); while the server is slow they are its queueing delay.
    pub send_lag_us: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
    pub mean: f64,
    pub stdev: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimePoint {
    /// Seconds since the end of the warm-up; this entry covers [second, second + 1).
    pub second: u64,
    pub responses: u64,
    pub throughput_rps: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Report {
    /// Builds the report of a finished run. `elapsed` runs from the end of the warm-up to the
    /// last response; `window` is the measured duration asked for.
    pub fn new(
        settings: Settings,
        recorder: &Recorder,
        elapsed: Duration,
        unsent_behind_schedule: Option<u64>,
    ) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let responses = recorder.responses();
        let transport_errors = recorder.transport_errors();
        let window = elapsed_s.min(settings.duration_s);
        let summary = Summary {
            requests: responses + transport_errors,
            responses,
            expected_responses: recorder.expected,
            unexpected_responses: recorder.unexpected,
            transport_errors,
            transport_errors_by_kind: recorder.errors.clone(),
            status_counts: recorder.statuses.clone(),
            elapsed_s,
            throughput_rps: if elapsed_s > 0.0 {
                responses as f64 / elapsed_s
            } else {
                0.0
            },
            unsent_behind_schedule,
            latency_us: latency(&recorder.latency),
            send_lag_us: settings.rate.map(|_| latency(&recorder.send_lag)),
        };
        Self {
            expected_status: expected_status(settings.scenario),
            percentiles: percentile_points(&recorder.latency),
            timeseries: timeseries(recorder, window),
            settings,
            summary,
        }
    }

    /// Writes the human-readable summary.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let (s, m) = (&self.settings, &self.summary);
        let mode = match s.rate {
            Some(rate) => format!("open loop at {} req/s", group(rate.round() as u64)),
            None => "closed loop".to_owned(),
        };
        let targets: Vec<&str> = [&s.target, &s.create_target]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        writeln!(
            out,
            "kurz-load: {}, {mode}, {} connections, {}{}",
            scenario_name(s.scenario),
            s.connections,
            targets.join(" + "),
            if s.api_key { ", with an API key" } else { "" }
        )?;
        writeln!(
            out,
            "  measured     {:.2} s after {:.2} s of warm-up",
            m.elapsed_s, s.warmup_s
        )?;
        writeln!(
            out,
            "  requests     {} ({} responses, {} transport errors{})",
            group(m.requests),
            group(m.responses),
            group(m.transport_errors),
            error_kinds(&m.transport_errors_by_kind),
        )?;
        writeln!(
            out,
            "  throughput   {} req/s",
            group(m.throughput_rps.round() as u64)
        )?;
        if let Some(items) = s.bulk_items {
            writeln!(
                out,
                "  links        {} links/s ({items} per request)",
                group((m.throughput_rps * f64::from(items)).round() as u64)
            )?;
        }
        let l = &m.latency_us;
        writeln!(
            out,
            "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            group(l.p50),
            group(l.p90),
            group(l.p99),
            group(l.p99_9),
            group(l.max),
            l.mean
        )?;
        if let Some(lag) = &m.send_lag_us {
            writeln!(
                out,
                "  send lag µs  p50 {}  p99 {}  max {}  (how late requests left after they were due)",
                group(lag.p50),
                group(lag.p99),
                group(lag.max)
            )?;
        }
        let statuses: Vec<String> = m
            .status_counts
            .iter()
            .map(|(status, count)| format!("{status}: {}", group(*count)))
            .collect();
        writeln!(out, "  statuses     {}", statuses.join(", "))?;
        let expected: Vec<String> = self
            .expected_status
            .iter()
            .map(|(kind, status)| format!("{status} for {kind}s"))
            .collect();
        writeln!(
            out,
            "  expected     {} -> {} expected, {} unexpected",
            expected.join(", "),
            group(m.expected_responses),
            group(m.unexpected_responses)
        )?;
        if let Some(unsent) = m.unsent_behind_schedule.filter(|&n| n > 0) {
            // A few requests due in the last microseconds of the run can miss the end by a hair
            // on an idle generator; more than one per connection means a real backlog.
            let why = if unsent > u64::from(s.connections) {
                ": the server (or the generator) did not keep up with the rate"
            } else {
                ""
            };
            writeln!(
                out,
                "  unsent       {} requests were due but not sent before the end{why}",
                group(unsent)
            )?;
        }
        Ok(())
    }

    /// Writes the report as pretty-printed JSON.
    pub fn write_json(&self, out: &mut impl Write) -> serde_json::Result<()> {
        serde_json::to_writer_pretty(out, self)
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            min: 0,
            p50: 0,
            p90: 0,
            p99: 0,
            p99_9: 0,
            p99_99: 0,
            max: 0,
            mean: 0.0,
            stdev: 0.0,
        };
    }
    Latency {
        min: h.min(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p99_9: h.value_at_quantile(0.999),
        p99_99: h.value_at_quantile(0.9999),
        max: h.max(),
        mean: h.mean(),
        stdev: h.stdev(),
    }
}

/// Percentiles 0, 50, 68.4, 80, 90, ... spaced evenly in log(1 / (1 - p)), ten per decade, up
/// to the finest percentile the sample count can tell apart (at most p99.999).
fn percentile_points(h: &Histogram<u64>) -> Vec<PercentilePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let count = h.len() as f64;
    (0..=50)
        .map(|step| 10f64.powf(f64::from(step) / 10.0))
        // The tolerance keeps 10^3 from missing a count of exactly 1000 by a rounding error.
        .take_while(|&inverse_tail| inverse_tail <= count * (1.0 + 1e-9))
        .map(|inverse_tail| {
            let quantile = 1.0 - 1.0 / inverse_tail;
            PercentilePoint {
                percentile: (quantile * 100.0 * 1e6).round() / 1e6,
                latency_us: h.value_at_quantile(quantile),
            }
        })
        .collect()
}

fn timeseries(recorder: &Recorder, window_s: f64) -> Vec<TimePoint> {
    recorder
        .seconds
        .iter()
        .enumerate()
        .map(|(index, second)| {
            // The last second of a window like 2.5 s is half a second long.
            let width = (window_s - index as f64).clamp(0.001, 1.0);
            let p = |q| {
                if second.latency.is_empty() {
                    0
                } else {
                    second.latency.value_at_quantile(q)
                }
            };
            TimePoint {
                second: index as u64,
                responses: second.responses,
                throughput_rps: second.responses as f64 / width,
                errors: second.errors,
                p50_us: p(0.5),
                p99_us: p(0.99),
            }
        })
        .collect()
}

fn expected_status(scenario: Scenario) -> BTreeMap<&'static str, &'static str> {
    use crate::scenario::{Expected, Kind};
    let (redirects, creates) = scenario.uses_targets();
    let mut map = BTreeMap::new();
    if redirects {
        map.insert(
            "redirect",
            Expected::for_request(scenario, Kind::Redirect).label(),
        );
    }
    if creates {
        map.insert(
            "create",
            Expected::for_request(scenario, Kind::Create).label(),
        );
    }
    map
}

fn error_kinds(kinds: &BTreeMap<&'static str, u64>) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|(kind, count)| format!("{kind}: {}", group(*count)))
        .collect();
    format!(": {}", parts.join(", "))
}

/// The scenario as written on the command line (clap's name for it).
pub fn scenario_name(scenario: Scenario) -> String {
    scenario
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(69_311), "69,311");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn percentile_points_stop_where_the_samples_run_out() {
        let mut h = Histogram::<u64>::new(3).expect("valid histogram");
        for v in 1..=1_000u64 {
            h.record(v).expect("in range");
        }
        let points = percentile_points(&h);
        assert_eq!(points.first().map(|p| p.percentile), Some(0.0));
        assert_eq!(points.last().map(|p| p.percentile), Some(99.9));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].latency_us <= w[1].latency_us)
        );
        let p90 = points.iter().find(|p| p.percentile == 90.0).expect("p90");
        assert_eq!(p90.latency_us, 900);
    }
}
