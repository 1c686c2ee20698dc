//! The progress line: once a second on stderr, rewritten in place with `\r` on a terminal and
//! printed as plain lines otherwise (CI logs, `2> file`), where `\r` would only add clutter.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::report::group;

/// Counters the workers bump as they go, for the progress line only (warm-up included).
#[derive(Debug, Default)]
pub struct Live {
    /// Requests answered, whatever the status.
    pub responses: AtomicU64,
    /// Requests that got no answer.
    pub errors: AtomicU64,
}

impl Live {
    pub fn response(&self) {
        self.responses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running progress display; [`Progress::finish`] stops it.
#[derive(Debug)]
pub struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts printing. `warmup` labels the first part of the run.
    pub fn start(live: Arc<Live>, start: Instant, warmup: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut last = (Instant::now(), 0u64);
            let mut printed = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let now = Instant::now();
                let done = live.responses.load(Ordering::Relaxed);
                let errors = live.errors.load(Ordering::Relaxed);
                let rate = (done + errors - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done + errors);
                let elapsed = now - start;
                let phase = if elapsed < warmup { " warm-up" } else { "" };
                let line = format!(
                    "[{:6.1}s{phase}] {} responses, {} req/s, {} errors",
                    elapsed.as_secs_f64(),
                    group(done),
                    group(rate.round() as u64),
                    group(errors),
                );
                print_line(&line, terminal);
                printed = true;
            }
            if terminal && printed {
                eprintln!();
            }
        });
        Self { stop, task }
    }

    /// Stops the display and ends its line.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn print_line(line: &str, terminal: bool) {
    let mut err = std::io::stderr().lock();
    // Progress is best effort: a closed stderr must not stop the run.
    let _ = if terminal {
        // `\x1b[K` clears what a longer previous line left behind.
        write!(err, "\r{line}\x1b[K")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}
