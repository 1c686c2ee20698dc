//! Progress of an import on standard error: an indicatif bar on a terminal (bytes of the file
//! read, rows, rate), and a plain line every few seconds elsewhere (a CI log, a pipe), where a
//! redrawn bar would be noise.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kurz_repository::bulk::ImportRecord;

#[derive(Debug)]
pub(super) struct Progress {
    bar: ProgressBar,
    terminal: bool,
    every: Duration,
    size: u64,
    started: Instant,
    /// Rows committed before this run: the rate counts this run's only.
    rows_before: i64,
    /// When the last plain line was printed.
    printed: Mutex<Instant>,
}

impl Progress {
    pub(super) fn new(size: u64, every: Duration, rows_before: i64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        let now = Instant::now();
        Self {
            bar,
            terminal,
            every,
            size,
            started: now,
            rows_before,
            printed: Mutex::new(now),
        }
    }

    /// A line for the operator, above the bar on a terminal.
    pub(super) fn note(&self, message: &str) {
        if self.terminal {
            self.bar.println(message);
        } else {
            eprintln!("import: {message}");
        }
    }

    pub(super) fn resumed(&self, record: &ImportRecord) {
        if record.rows_done > 0 {
            self.note(&format!(
                "resuming after row {} ({} imported, {} rejected so far)",
                record.rows_done, record.imported, record.rejected
            ));
        } else {
            self.note(&format!("importing {} bytes", self.size));
        }
    }

    /// After each committed batch; `bytes` of the file read so far.
    pub(super) fn update(&self, bytes: u64, record: &ImportRecord) {
        let line = self.line(record);
        self.bar.set_position(bytes);
        if self.terminal {
            self.bar.set_message(line);
        } else if self.due() {
            let share = bytes as f64 * 100.0 / self.size.max(1) as f64;
            eprintln!("import: {line}, {share:.0}% of the file");
        }
    }

    /// The pool had fewer keys than a batch needs.
    pub(super) fn waiting_for_keys(&self, missing: usize) {
        let message = format!(
            "waiting for {missing} keys: the key pool is empty (the key-pool worker refills it; is kurz-keypool running?)"
        );
        if self.terminal {
            self.bar.set_message(message);
        } else if self.due() {
            eprintln!("import: {message}");
        }
    }

    pub(super) fn finish(&self, record: &ImportRecord) {
        self.bar.finish_and_clear();
        if !self.terminal {
            eprintln!("import: {}, done", self.line(record));
        }
    }

    fn line(&self, record: &ImportRecord) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rows = record.rows_done - self.rows_before;
        let rate = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
        format!(
            "{} rows, {} imported, {} rejected, {rate:.0} rows/s",
            record.rows_done, record.imported, record.rejected
        )
    }

    /// Whether a plain line is due, and if so, that it is printed now.
    fn due(&self) -> bool {
        let mut printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        if printed.elapsed() < self.every {
            return false;
        }
        *printed = Instant::now();
        true
    }
}
