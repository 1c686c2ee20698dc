//! `kurz-load seed`: creates links through the create API and writes their codes to a file, for
//! the redirect scenarios' `--codes`.
//!
//! Concurrency is bounded (`--concurrency`, 32 by default) and the first failure stops the
//! seeding: a seed file is an input to later measurements, so a partial or doubtful one should
//! be noticed, not papered over. The codes created before the failure are still written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::StatusCode;
use hyper::http::uri::PathAndQuery;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::api_key::ApiKey;
use crate::cli::SeedArgs;
use crate::client::{Connection, Reply};
use crate::codes::is_code;
use crate::progress::{Live, Progress};
use crate::runner::new_run_id;
use crate::scenario::{CREATE_PATH, create_body};
use crate::target::{Target, parse_target};

/// Creates `args.count` links and writes their codes to `args.out`, in creation order. Returns
/// how many were written.
pub async fn run_seed(args: SeedArgs) -> anyhow::Result<u64> {
    let target = parse_target(&args.create_target)?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    let job = Arc::new(Job {
        target,
        api_key: args.api_key.clone(),
        timeout: args.timeout,
        count: args.count,
        run_id,
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
        live: Arc::new(Live::default()),
    });
    let progress = Progress::start(job.live.clone(), Instant::now(), Duration::ZERO);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(seed_worker(job.clone())))
        .collect();
    let mut created = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    for task in tasks {
        created.extend(task.await.context("a seeding worker panicked")?);
    }
    progress.finish().await;
    created.sort_unstable_by_key(|(index, _)| *index);
    write_codes(&args.out, created.iter().map(|(_, code)| code.as_str()))?;
    let written = created.len() as u64;
    if let Some(error) = job.first_error.lock().await.take() {
        bail!(
            "seeding stopped after {written} of {} links: {error} (the {written} codes created were written to {})",
            args.count,
            args.out.display()
        );
    }
    eprintln!("kurz-load: wrote {written} codes to {}", args.out.display());
    Ok(written)
}

#[derive(Debug)]
struct Job {
    target: Target,
    api_key: Option<ApiKey>,
    timeout: Duration,
    count: u64,
    run_id: String,
    next: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
    live: Arc<Live>,
}

/// Takes indices until they run out or a request fails; returns `(index, code)` pairs.
async fn seed_worker(job: Arc<Job>) -> Vec<(u64, String)> {
    let mut connection =
        Connection::new(job.target.clone(), job.timeout).with_api_key(job.api_key.clone());
    let mut created = Vec::new();
    while !job.stop.load(Ordering::Relaxed) {
        let index = job.next.fetch_add(1, Ordering::Relaxed);
        if index >= job.count {
            break;
        }
        let url = format!("https://example.com/seed/{}/{index}", job.run_id);
        let path = PathAndQuery::from_static(CREATE_PATH);
        let outcome = match connection.post_json(path, create_body(&url)).await {
            Ok(reply) => code_from(&reply),
            Err(error) => Err(format!("transport error ({})", error.name())),
        };
        match outcome {
            Ok(code) => {
                job.live.response();
                created.push((index, code));
            }
            Err(error) => {
                job.live.error();
                job.stop.store(true, Ordering::Relaxed);
                job.first_error.lock().await.get_or_insert(error);
            }
        }
    }
    created
}

/// The code of a created link, from a 201 response's JSON body.
fn code_from(reply: &Reply) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Created {
        code: String,
    }
    let snippet = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
    if reply.status != StatusCode::CREATED {
        return Err(format!("status {} ({})", reply.status, snippet()));
    }
    match serde_json::from_slice::<Created>(&reply.body) {
        Ok(created) if is_code(&created.code) => Ok(created.code),
        _ => Err(format!("a 201 without a usable `code` ({})", snippet())),
    }
}

fn write_codes<'a>(path: &Path, codes: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for code in codes {
        writeln!(out, "{code}").with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
