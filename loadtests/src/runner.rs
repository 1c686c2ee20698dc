//! Runs a load test: plans it from the flags, drives the workers in closed or open mode, and
//! writes the report.
//!
//! Timeline of a run: `start`, then `--warmup` of unrecorded load, then the measured window of
//! `--duration` ending at the deadline. No request is sent after the deadline; responses to
//! requests in flight then are still awaited (each within `--timeout`) and recorded.

use bytes::Bytes;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::RngExt;
use tokio::sync::{Mutex, mpsc};

use crate::api_key::ApiKey;
use crate::cli::{Mode, RunArgs};
use crate::client::{Connection, Reply, TransportError};
use crate::codes::load_codes;
use crate::plot::write_svg;
use crate::progress::{Live, Progress};
use crate::report::{Report, Settings};
use crate::scenario::{
    BULK_PATH, CREATE_PATH, Expected, Kind, Planned, Planner, Workload, WorkloadError,
};
use crate::schedule::{corrected_latency, due_before, intended_offset, is_measured};
use crate::stats::Recorder;
use crate::target::{Target, parse_target};

/// Pause after a failed connect, so that a worker facing a stopped server does not spin a core
/// on refused connections (each is still counted as an error).
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Runs the load test that `args` describe, prints the summary and writes the requested files.
/// Fails on bad flags (before any request) and when no request got a response.
pub async fn run_and_report(args: RunArgs) -> anyhow::Result<Report> {
    let plan = RunPlan::from_args(&args)?;
    let report = run(plan).await;
    report
        .print(&mut std::io::stdout().lock())
        .context("printing the summary")?;
    if let Some(path) = &args.out_json {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        report
            .write_json(&mut out)
            .map_err(anyhow::Error::from)
            .and_then(|()| out.flush().map_err(anyhow::Error::from))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.out_plot {
        write_svg(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.summary.responses == 0 {
        bail!(
            "no request got a response in the measured window: is the server running at {}?",
            [&report.settings.target, &report.settings.create_target]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    Ok(report)
}

/// A checked run: flags validated, targets resolved, codes loaded.
#[derive(Debug)]
pub struct RunPlan {
    settings: Settings,
    redirect: Option<Target>,
    create: Option<Target>,
    /// Sent with every create, when given.
    api_key: Option<ApiKey>,
    workload: Workload,
    timing: Timing,
    timeout: Duration,
}

/// The run's clock settings.
#[derive(Debug, Clone, Copy)]
struct Timing {
    mode: Mode,
    rate: f64,
    connections: u32,
    warmup: Duration,
    duration: Duration,
    max_requests: u64,
}

impl RunPlan {
    pub fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        if args.mode == Mode::Closed && args.rate.is_some() {
            bail!("--rate only applies to --mode open");
        }
        // Every target given is checked, used by this scenario or not: a non-loopback URL on
        // the command line is a mistake worth stopping for.
        let redirect = parse_target(&args.target)?;
        let create = parse_target(&args.create_target)?;
        let (uses_redirect, uses_create) = args.scenario.uses_targets();
        let codes = match (&args.codes, args.scenario.needs_codes()) {
            (Some(path), true) => load_codes(path)?,
            (None, true) => return Err(WorkloadError::NoCodes(args.scenario).into()),
            (_, false) => Vec::new(),
        };
        let rng_seed = args.rng_seed.unwrap_or_else(|| rand::rng().random());
        let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
        let workload = Workload::new(args.scenario, &codes, args.hot_codes, args.zipf_s, &run_id)?
            .with_bulk_items(args.bulk_items);
        let settings = Settings {
            mode: args.mode,
            scenario: args.scenario,
            target: uses_redirect.then(|| args.target.clone()),
            create_target: uses_create.then(|| args.create_target.clone()),
            api_key: uses_create && args.api_key.is_some(),
            connections: args.connections,
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            max_requests: args.max_requests,
            timeout_s: args.timeout.as_secs_f64(),
            codes_file: args.codes.as_ref().map(|p| p.display().to_string()),
            codes_loaded: codes.len(),
            hot_codes: workload.hot_len(),
            zipf_s: args.zipf_s,
            bulk_items: (args.scenario == crate::cli::Scenario::Bulk).then_some(args.bulk_items),
            run_id,
            rng_seed,
            threads: args.threads.map_or_else(available_cores, |t| t as usize),
        };
        // Output files are created now so that a bad path fails before the run, not after it.
        for path in [&args.out_json, &args.out_plot].into_iter().flatten() {
            File::create(path).with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(Self {
            redirect: uses_redirect.then_some(redirect),
            create: uses_create.then_some(create),
            api_key: args.api_key.clone(),
            workload,
            timing: Timing {
                mode: args.mode,
                rate: args.rate.unwrap_or(0.0),
                connections: args.connections,
                warmup: args.warmup,
                duration: args.duration,
                max_requests: args.max_requests,
            },
            timeout: args.timeout,
            settings,
        })
    }
}

/// Runs the plan to the end and reports. Transport errors are results, not failures.
pub async fn run(plan: RunPlan) -> Report {
    let timing = plan.timing;
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = tokio::spawn(stop_on_ctrl_c(stop.clone()));
    let start = Instant::now();
    let shared = Shared {
        start,
        measure_start: start + timing.warmup,
        deadline: start + timing.warmup + timing.duration,
        scenario: plan.settings.scenario,
        open: timing.mode == Mode::Open,
        live: live.clone(),
        stop: stop.clone(),
    };
    let progress = Progress::start(live, start, timing.warmup);
    let workers: Vec<Worker> = (0..timing.connections)
        .map(|index| Worker {
            planner: plan
                .workload
                .planner(plan.settings.rng_seed.wrapping_add(u64::from(index))),
            redirect: plan
                .redirect
                .clone()
                .map(|t| Connection::new(t, plan.timeout)),
            create: plan
                .create
                .clone()
                .map(|t| Connection::new(t, plan.timeout).with_api_key(plan.api_key.clone())),
            recorder: Recorder::new(shared.measure_start, timing.duration),
            shared: shared.clone(),
        })
        .collect();
    let (recorders, unsent) = match timing.mode {
        Mode::Closed => (run_closed(workers, timing.max_requests).await, None),
        Mode::Open => {
            let (recorders, unsent) = run_open(workers, timing, stop).await;
            (recorders, Some(unsent))
        }
    };
    let finished = Instant::now();
    progress.finish().await;
    ctrl_c.abort();
    let mut total = Recorder::new(shared.measure_start, timing.duration);
    for recorder in &recorders {
        total.merge(recorder);
    }
    let elapsed = finished.saturating_duration_since(shared.measure_start);
    Report::new(plan.settings, &total, elapsed, unsent)
}

async fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("\nkurz-load: interrupted, stopping and reporting what was measured");
        stop.store(true, Ordering::Relaxed);
    }
}

/// Closed loop: every worker sends its next request as soon as the previous one is answered.
async fn run_closed(workers: Vec<Worker>, max_requests: u64) -> Vec<Recorder> {
    let budget = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let budget = budget.clone();
            tokio::spawn(async move {
                while worker.may_send() && budget.fetch_add(1, Ordering::Relaxed) < max_requests {
                    let planned = worker.planner.plan();
                    let now = Instant::now();
                    worker.send(planned, now).await;
                }
                worker.recorder
            })
        })
        .collect();
    join_all(tasks).await
}

/// Open loop: a dispatcher thread releases request indices at their due times into a queue;
/// whichever worker is free takes the next one. Returns the recorders and how many requests
/// were due but never sent (still queued at the deadline).
///
/// The dispatcher is an OS thread rather than a tokio task because tokio's timer has 1 ms
/// granularity: waking up to 1 ms late would add up to 1 ms to every corrected latency, more
/// than the whole latency of a loopback request. `std::thread::sleep` wakes within tens of µs.
async fn run_open(
    workers: Vec<Worker>,
    timing: Timing,
    stop: Arc<AtomicBool>,
) -> (Vec<Recorder>, u64) {
    let total = due_before(timing.warmup + timing.duration, timing.rate).min(timing.max_requests);
    let (tx, rx) = mpsc::unbounded_channel();
    // The receiver is shared through a mutex: the one worker holding it waits for the next
    // index, the others queue for the mutex, so each index goes to exactly one free worker.
    let queue = Arc::new(Mutex::new(rx));
    let sent = Arc::new(AtomicU64::new(0));
    let start = workers
        .first()
        .map_or_else(Instant::now, |w| w.shared.start);
    let dispatcher = std::thread::spawn(move || dispatch(tx, start, timing.rate, total, &stop));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (queue, sent) = (queue.clone(), sent.clone());
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.recv().await;
                    let Some(index) = next else { break };
                    if !worker.may_send() {
                        continue; // leave it unsent; drain the queue
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    let intended = start + intended_offset(index, timing.rate);
                    let planned = worker.planner.plan();
                    worker.send(planned, intended).await;
                }
                worker.recorder
            })
        })
        .collect();
    let recorders = join_all(tasks).await;
    // The channel closes only when the dispatcher is done, so it has already returned.
    let dispatched = dispatcher.join().unwrap_or(total);
    (
        recorders,
        dispatched.saturating_sub(sent.load(Ordering::Relaxed)),
    )
}

/// Releases indices `0..total` at their due times; returns how many it released.
fn dispatch(
    tx: mpsc::UnboundedSender<u64>,
    start: Instant,
    rate: f64,
    total: u64,
    stop: &AtomicBool,
) -> u64 {
    for index in 0..total {
        let due = start + intended_offset(index, rate);
        loop {
            if stop.load(Ordering::Relaxed) {
                return index;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            // In slices, so that Ctrl-C is noticed even at very low rates.
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
        }
        if tx.send(index).is_err() {
            return index;
        }
    }
    total
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Recorder>>) -> Vec<Recorder> {
    let mut recorders = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(recorder) => recorders.push(recorder),
            // A worker only panics on a bug; its results are lost, the others still count.
            Err(e) => eprintln!("kurz-load: a worker failed: {e}"),
        }
    }
    recorders
}

/// What all workers share.
#[derive(Debug, Clone)]
struct Shared {
    start: Instant,
    measure_start: Instant,
    deadline: Instant,
    scenario: crate::cli::Scenario,
    /// Open mode: latency origins are intended times, and send lag is recorded.
    open: bool,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
}

/// One worker: its request plan, its connections and its results.
#[derive(Debug)]
struct Worker {
    planner: Planner,
    redirect: Option<Connection>,
    create: Option<Connection>,
    recorder: Recorder,
    shared: Shared,
}

impl Worker {
    fn may_send(&self) -> bool {
        !self.shared.stop.load(Ordering::Relaxed) && Instant::now() < self.shared.deadline
    }

    /// POSTs `body` to `path` on the create target.
    async fn post(&mut self, path: &'static str, body: Bytes) -> Result<Reply, TransportError> {
        match self.create.as_mut() {
            Some(conn) => {
                let path = hyper::http::uri::PathAndQuery::from_static(path);
                conn.post_json(path, body).await
            }
            None => Err(TransportError::Connect),
        }
    }

    /// Sends `planned` and records the outcome, with latency counted from `origin`: the actual
    /// send time in closed mode, the intended one in open mode.
    async fn send(&mut self, planned: Planned, origin: Instant) {
        let measured = is_measured(
            origin.saturating_duration_since(self.shared.start),
            self.shared.measure_start - self.shared.start,
        );
        if measured && self.shared.open {
            self.recorder.send_lag(origin, Instant::now());
        }
        let (kind, result) = match planned {
            Planned::Redirect(path) => match self.redirect.as_mut() {
                Some(conn) => (Kind::Redirect, conn.get(path).await),
                None => (Kind::Redirect, Err(TransportError::Connect)),
            },
            Planned::Create(body) => (Kind::Create, self.post(CREATE_PATH, body).await),
            Planned::Bulk(body) => (Kind::Create, self.post(BULK_PATH, body).await),
        };
        let completed = Instant::now();
        match result {
            Ok(reply) => {
                self.shared.live.response();
                if measured {
                    let expected = Expected::for_request(self.shared.scenario, kind);
                    let start = self.shared.start;
                    let latency = corrected_latency(
                        origin.saturating_duration_since(start),
                        completed.saturating_duration_since(start),
                    );
                    let ok = expected.matches(reply.status);
                    self.recorder.response(completed, latency, reply.status, ok);
                }
            }
            Err(error) => {
                self.shared.live.error();
                if measured {
                    self.recorder.error(completed, error);
                }
                if error == TransportError::Connect {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
    }
}

/// A run id: the start time plus a random part, so that two runs in the same second differ.
pub(crate) fn new_run_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{secs}-{suffix:06x}")
}

pub(crate) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
