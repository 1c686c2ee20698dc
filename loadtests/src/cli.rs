//! The command line. `kurz-load [RUN FLAGS]` runs a load test; `kurz-load seed ...` creates links.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::api_key::{self, ApiKey, ApiKeyError, ApiKeyParser};

/// kurz-load: a load generator for Kurz's redirect and create services (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "kurz-load", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// Fills the running command's `--api-key` from `env`, the value of `KURZ_LOAD_API_KEY`,
    /// when the flag was not given (see [`api_key::resolve`]).
    pub fn api_key_from_env(&mut self, env: Option<&OsStr>) -> Result<(), ApiKeyError> {
        let slot = match &mut self.command {
            Some(Command::Seed(seed)) => &mut seed.api_key,
            None => &mut self.run.api_key,
        };
        *slot = api_key::resolve(slot.take(), env)?;
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create links through the create API and write their codes to a file, one per line.
    Seed(SeedArgs),
}

/// Flags of a load run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// closed: each connection sends back to back, as fast as the server answers.
    /// open: requests are due at a fixed rate (`--rate`), whatever the server does.
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,

    /// Requests per second in open mode, over all connections.
    #[arg(long, value_parser = parse_rate, required_if_eq("mode", "open"))]
    pub rate: Option<f64>,

    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::RedirectHot)]
    pub scenario: Scenario,

    /// The redirect service (GET /{code}); loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// The create API (POST /api/v1/links); loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub create_target: String,

    /// API key sent as `Authorization: Bearer` with every create; never printed. Prefer the
    /// environment variable KURZ_LOAD_API_KEY, read when this flag is absent: a flag shows in
    /// `ps`.
    #[arg(long, value_name = "KEY", value_parser = ApiKeyParser)]
    pub api_key: Option<ApiKey>,

    /// Concurrent workers, each with its own persistent connection (per target in `mixed`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// How long to measure, after the warm-up ("10s", "500ms", "2m", or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load sent before measuring starts, not recorded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Upper bound on requests sent in the whole run, warm-up included.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,

    /// Per-request time limit, connecting included; a request past it is a transport error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// File of codes, one per line (needed by redirect-hot, redirect-uniform and mixed).
    #[arg(long)]
    pub codes: Option<PathBuf>,

    /// How many codes, from the top of the list, redirect-hot draws from.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub hot_codes: u64,

    /// Zipf exponent for redirect-hot (0 is uniform; 1 is the classic web-cache skew).
    #[arg(long, default_value_t = 1.0, value_parser = parse_zipf_s)]
    pub zipf_s: f64,

    /// Links per request of the bulk scenario (the service allows `KURZ_BULK_MAX_ITEMS`,
    /// 100 by default).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub bulk_items: u32,

    /// Write the report as JSON to this file.
    #[arg(long)]
    pub out_json: Option<PathBuf>,

    /// Write an SVG plot (latency percentiles, throughput and p99 over time) to this file.
    #[arg(long)]
    pub out_plot: Option<PathBuf>,

    /// Seed of the random choices, for a repeatable sequence of codes; random when absent.
    #[arg(long)]
    pub rng_seed: Option<u64>,

    /// Run id in created URLs (`https://example.com/load/{run-id}/{n}`); random when absent.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// Runtime worker threads; defaults to the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

/// Flags of `kurz-load seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// How many links to create.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub count: u64,

    /// The create API; loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub create_target: String,

    /// API key sent as `Authorization: Bearer` with every create; never printed. Prefer the
    /// environment variable KURZ_LOAD_API_KEY, read when this flag is absent: a flag shows in
    /// `ps`.
    #[arg(long, value_name = "KEY", value_parser = ApiKeyParser)]
    pub api_key: Option<ApiKey>,

    /// Where to write the codes, one per line.
    #[arg(long)]
    pub out: PathBuf,

    /// Requests in flight at once. Bounded so that seeding does not itself become a load test.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Per-request time limit, connecting included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Run id in created URLs (`https://example.com/seed/{run-id}/{n}`); random when absent.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// Runtime worker threads; defaults to the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Closed,
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// GET /{code}, codes drawn Zipf over the first `--hot-codes` codes of the list.
    RedirectHot,
    /// GET /{code}, codes drawn uniformly over the whole list.
    RedirectUniform,
    /// GET /{code} with random 7-character codes that almost surely do not exist.
    RedirectMiss,
    /// POST /api/v1/links with a new URL each time.
    Create,
    /// 95% redirect-hot, 5% create.
    Mixed,
    /// POST /api/v1/links/bulk with `--bulk-items` new URLs each time.
    Bulk,
}

impl Scenario {
    /// Whether the scenario reads `--codes`.
    pub fn needs_codes(self) -> bool {
        matches!(
            self,
            Self::RedirectHot | Self::RedirectUniform | Self::Mixed
        )
    }

    /// Whether the scenario sends to `--target`, and to `--create-target`.
    pub fn uses_targets(self) -> (bool, bool) {
        match self {
            Self::RedirectHot | Self::RedirectUniform | Self::RedirectMiss => (true, false),
            Self::Create | Self::Bulk => (false, true),
            Self::Mixed => (true, true),
        }
    }
}

/// Parses "10s", "250ms", "2m", "1.5s" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: give requests per second, above 0"
        )),
    }
}

fn parse_zipf_s(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "`{text}` is not a Zipf exponent: give a number >= 0"
        )),
    }
}

/// A run id goes into URLs and JSON unescaped, so it is restricted to characters safe in both.
fn parse_run_id(text: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}`: a run id is 1 to 64 of [A-Za-z0-9_-]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_usual_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn open_mode_without_a_rate_is_refused() {
        let parsed = Cli::try_parse_from(["kurz-load", "--mode", "open"]);
        assert!(parsed.is_err());
        let parsed = Cli::try_parse_from(["kurz-load", "--mode", "open", "--rate", "100"]);
        assert!(parsed.is_ok());
    }

    #[test]
    fn seed_is_a_subcommand_and_run_flags_are_top_level() {
        let cli = Cli::try_parse_from(["kurz-load", "seed", "--count", "5", "--out", "c.txt"])
            .expect("seed parses");
        assert!(matches!(cli.command, Some(Command::Seed(ref s)) if s.count == 5));
        let cli = Cli::try_parse_from(["kurz-load", "--scenario", "redirect-miss"])
            .expect("run flags parse");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.scenario, Scenario::RedirectMiss);
    }

    #[test]
    fn run_ids_are_limited_to_url_safe_characters() {
        assert!(parse_run_id("run-42_a").is_ok());
        assert!(parse_run_id("a/b").is_err());
        assert!(parse_run_id("").is_err());
    }
}
