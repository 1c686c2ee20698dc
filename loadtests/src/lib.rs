#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap derive), duration and rate parsers.
//! - [`api_key`]: `--api-key` and `KURZ_LOAD_API_KEY`, a header value that no output shows.
//! - [`target`]: turns a `--target` URL into a loopback socket address, refusing anything else.
//! - [`codes`]: reads the code list and makes random codes for `redirect-miss`.
//! - [`zipf`]: draws hot-code ranks from a Zipf distribution.
//! - [`scenario`]: what each worker sends next, and which statuses each scenario expects.
//! - [`schedule`]: the open-loop schedule and the coordinated-omission arithmetic (pure functions).
//! - [`client`]: one persistent HTTP/1.1 connection that reconnects after errors.
//! - [`stats`]: per-worker recording (HDR histogram, per-second buckets, status counts) and merging.
//! - [`runner`]: runs the workers in either mode, with the progress line, and builds the report.
//! - [`progress`]: the once-a-second progress line on stderr.
//! - [`report`]: the report: printed summary and JSON file.
//! - [`plot`]: the SVG plot.
//! - [`seed`]: the `seed` subcommand, which creates links and writes their codes.
//!
//! `anyhow` appears only in [`runner`], [`seed`] and `main`, the edges that orchestrate a run; the
//! checks that a test exercises return their own error types.

pub mod api_key;
pub mod cli;
pub mod client;
pub mod codes;
pub mod plot;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod seed;
pub mod stats;
pub mod target;
pub mod zipf;

pub use cli::{Cli, Command, RunArgs, SeedArgs};
pub use runner::run_and_report;
pub use seed::run_seed;
