//! `kurz-create import`, run as an operator runs it: the real binary, against this test's
//! PostgreSQL.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use kurz_repository::KeyRepository;
use kurz_testkit::TestEnv;

/// A CSV file of `rows` data rows and the rejections expected of it, as `(line, code)`.
///
/// Row `i` (from 1) targets `https://example.com/{tag}/{i}`, except: every 1,000th from the
/// 7th has an `ftp:` URL, every 1,000th from the 500th an unreadable expiry, row 5 has an
/// alias that row 6 repeats, and row 10 is a quoted URL with a line break in it, so every row
/// after it starts one physical line further down.
struct Fixture {
    path: PathBuf,
    rejected: Vec<(u64, String)>,
    valid: i64,
}

fn fixture(dir: &Path, rows: u64, tag: &str) -> Fixture {
    let mut text = String::from("url,alias,expires_at\n");
    let mut rejected = Vec::new();
    for i in 1..=rows {
        let line = if i > 10 { i + 2 } else { i + 1 };
        let code = match i {
            5 => {
                let _ = writeln!(text, "https://example.com/{tag}/5,{tag}-alias,");
                None
            }
            6 => {
                let _ = writeln!(text, "https://example.com/{tag}/6,{tag}-alias,");
                Some("alias_taken")
            }
            10 => {
                let _ = writeln!(text, "\"https://example.com/{tag}/10\nsecond-line\",,");
                Some("url_invalid_characters")
            }
            i if i % 1_000 == 7 => {
                let _ = writeln!(text, "ftp://example.com/{tag}/{i},,");
                Some("unsupported_scheme")
            }
            i if i % 1_000 == 500 => {
                let _ = writeln!(text, "https://example.com/{tag}/{i},,next tuesday");
                Some("invalid_expires_at")
            }
            i => {
                let _ = writeln!(text, "https://example.com/{tag}/{i},,");
                None
            }
        };
        if let Some(code) = code {
            rejected.push((line, code.to_owned()));
        }
    }
    let path = dir.join("links.csv");
    std::fs::write(&path, text).expect("write the CSV");
    Fixture {
        valid: rows as i64 - rejected.len() as i64,
        path,
        rejected,
    }
}

/// Compares reports without printing thousands of rows.
fn assert_same_rejections(found: &[(u64, String)], expected: &[(u64, String)]) {
    let first_difference = found.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        found.len() == expected.len() && first_difference.is_none(),
        "{} rows reported, {} expected; first difference at {first_difference:?}: {:?} vs {:?}",
        found.len(),
        expected.len(),
        first_difference.and_then(|i| found.get(i)),
        first_difference.and_then(|i| expected.get(i)),
    );
}

/// The arguments of an import of `file` for `acme`, reporting to `report`, with `extra` flags.
fn arguments(report: &Path, file: &Path, extra: &[&str]) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
    let mut args = vec![
        "--account".into(),
        "acme".into(),
        "--report".into(),
        path(report),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.push(path(file));
    args
}

/// `kurz-create import` with this env's settings, without a terminal.
fn import(env: &TestEnv, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kurz-create"));
    command
        .arg("import")
        .args(args)
        .envs(env.database_vars())
        .env("KURZ_REDIS_URL", env.redis_url())
        .env("KURZ_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(env: &TestEnv, args: &[&str]) -> Output {
    let output = import(env, args).output().await.expect("kurz-create runs");
    assert!(
        output.status.success(),
        "kurz-create import {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The report's rows, as `(line, code)`.
fn report(path: &Path) -> Vec<(u64, String)> {
    let mut reader = csv::Reader::from_path(path).expect("a report");
    assert_eq!(
        reader.headers().expect("a header"),
        vec!["line", "code", "message"]
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("a row");
            (r[0].parse().expect("a line number"), r[1].to_owned())
        })
        .collect()
}

async fn setup(keys: u64) -> (TestEnv, tempfile::TempDir) {
    let env = TestEnv::start().await;
    env.repository()
        .create_account("acme")
        .await
        .expect("an account");
    env.repository()
        .refill(keys, 7)
        .await
        .expect("fill the pool");
    (env, tempfile::tempdir().expect("a temp dir"))
}

/// The largest resident set the process reached, from /proc, in KiB (0 once it is gone).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs `command` to its end, watching its peak resident set (in KiB).
async fn watched(mut command: tokio::process::Command) -> (Output, u64) {
    let child = command.spawn().expect("kurz-create starts");
    let pid = child.id().expect("a pid");
    let watch = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            let now = peak_rss_kib(pid);
            if now == 0 {
                return peak;
            }
            peak = peak.max(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let output = child.wait_with_output().await.expect("it ends");
    (output, watch.await.expect("the watch"))
}

#[tokio::test]
async fn one_million_rows_import_in_bounded_memory_with_progress_and_a_report() {
    const ROWS: u64 = 1_000_000;
    // Room to spare: a key claim that times out on a loaded machine may still have committed,
    // stranding its keys, and no key-pool worker runs here to refill the pool.
    let (env, dir) = setup(ROWS + 100_000).await;
    let file = fixture(dir.path(), ROWS, "imp");
    let report_path = dir.path().join("rejected.csv");
    let args = arguments(&report_path, &file.path, &["--progress-every", "2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // What the binary needs for a tiny file: runtime, pools, allocator arenas.
    let small_dir = tempfile::tempdir().expect("a temp dir");
    let small = fixture(small_dir.path(), 1_000, "small");
    let small_report = small_dir.path().join("rejected.csv");
    let small_args = arguments(&small_report, &small.path, &[]);
    let small_args: Vec<&str> = small_args.iter().map(String::as_str).collect();
    let (small_output, baseline_kib) = watched(import(&env, &small_args)).await;
    assert!(small_output.status.success());

    let started = Instant::now();
    let (output, peak_kib) = watched(import(&env, &args)).await;
    let elapsed = started.elapsed();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    eprintln!(
        "1,000,000 rows imported in {elapsed:?}, peak RSS {peak_kib} KiB (1,000 rows: {baseline_kib} KiB)"
    );
    let progress_lines = stderr.lines().filter(|l| l.contains("rows/s")).count();
    assert!(progress_lines >= 2, "progress lines: {stderr}");
    assert!(stderr.contains("% of the file"), "{stderr}");
    let file_kib = std::fs::metadata(&file.path).expect("the file").len() / 1024;
    assert!(
        peak_kib < baseline_kib + 16 * 1024,
        "peak RSS {peak_kib} KiB for a file of {file_kib} KiB, {baseline_kib} KiB for 1,000 rows"
    );
    assert_same_rejections(&report(&report_path), &file.rejected);
    let big = "SELECT count(*) FROM links WHERE target_url LIKE 'https://example.com/imp/%'";
    assert_eq!(env.count(big).await, file.valid);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains(&format!("imported {} links", file.valid)),
        "{summary}"
    );
    let owners =
        "SELECT count(*) FROM links l JOIN accounts a ON a.id = l.owner_id WHERE a.name = 'acme'";
    assert_eq!(env.count(owners).await, file.valid + small.valid);
}

#[tokio::test]
async fn an_import_killed_midway_and_run_again_imports_every_valid_row_exactly_once() {
    const ROWS: u64 = 60_000;
    // The killed run strands the keys of the batch it was in: claimed, never used.
    let (env, dir) = setup(2 * ROWS).await;
    let file = fixture(dir.path(), ROWS, "imp");
    let report_path = dir.path().join("rejected.csv");
    let args = arguments(&report_path, &file.path, &["--batch-size", "500"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut first = import(&env, &args).spawn().expect("kurz-create starts");
    let sql = env.sql().await;
    let rows_done = || async {
        sql.query_opt("SELECT rows_done FROM imports", &[])
            .await
            .expect("query")
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows_done().await < 5_000 {
        if let Some(status) = first.try_wait().expect("the first run") {
            let mut stderr = String::new();
            if let Some(mut pipe) = first.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            panic!("the first run ended ({status}) before it was killed: {stderr}");
        }
        assert!(Instant::now() < deadline, "no batches committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.start_kill().expect("SIGKILL");
    let killed = first.wait().await.expect("it ends");
    let at_kill = rows_done().await;
    let second = run(&env, &args).await;
    let third = run(&env, &args).await;

    assert!(!killed.success());
    assert!(
        at_kill < ROWS as i64,
        "killed after it finished ({at_kill} rows): nothing was resumed"
    );
    let resumed = String::from_utf8_lossy(&second.stderr);
    assert!(
        resumed.contains(&format!("resuming after row {at_kill}")),
        "{resumed}"
    );
    let duplicated = "SELECT count(*) FROM (SELECT target_url FROM links GROUP BY target_url HAVING count(*) > 1) d";
    assert_eq!(env.count(duplicated).await, 0, "a row imported twice");
    assert_eq!(env.count("SELECT count(*) FROM links").await, file.valid);
    assert_same_rejections(&report(&report_path), &file.rejected);
    let again = String::from_utf8_lossy(&third.stdout);
    assert!(again.contains("already imported"), "{again}");
    assert_eq!(env.count("SELECT count(*) FROM links").await, file.valid);
}

#[tokio::test]
async fn an_unknown_column_stops_the_import_before_any_row() {
    let (env, dir) = setup(10).await;
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "url,alias,colour\nhttps://example.com/,,red\n").expect("write");

    let output = import(&env, &["--account", "acme", path.to_str().expect("utf-8")])
        .output()
        .await
        .expect("kurz-create runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        format!("{stderr}{stdout}").contains("unknown column `colour`"),
        "{stderr}{stdout}"
    );
    assert_eq!(env.count("SELECT count(*) FROM links").await, 0);
}
