//! Runs kurz-load against an in-process sink server on 127.0.0.1:0, for about a second per test.

mod sink;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use kurz_loadtests::{Cli, Command, RunArgs, SeedArgs};
use serde_json::Value;
use sink::{SinkOptions, spawn_sink};
use tempfile::TempDir;

fn run_args(args: &[&str]) -> RunArgs {
    let cli = Cli::try_parse_from(std::iter::once("kurz-load").chain(args.iter().copied()))
        .expect("valid flags");
    cli.run
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("JSON report written");
    serde_json::from_str(&text).expect("valid JSON")
}

fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).expect("SVG plot written");
    assert!(
        text.contains("<svg"),
        "not an SVG: {}",
        &text[..text.len().min(100)]
    );
    assert!(
        text.contains("<polyline") || text.contains("<path"),
        "no line drawn"
    );
}

fn write_codes(dir: &TempDir) -> String {
    let path = dir.path().join("codes.txt");
    let codes: Vec<String> = (0..500).map(|i| format!("c{i:06}")).collect();
    std::fs::write(&path, codes.join("\n")).expect("codes written");
    path.display().to_string()
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_mode_counts_every_response_and_writes_the_files() {
    // Arrange
    let sink = spawn_sink("127.0.0.1:0", SinkOptions::default())
        .await
        .expect("sink starts");
    let dir = TempDir::new().expect("temp dir");
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let codes = write_codes(&dir);
    let (json_arg, svg_arg) = (json.display().to_string(), svg.display().to_string());
    let url = sink.url();
    let args = run_args(&[
        "--target",
        &url,
        "--codes",
        &codes,
        "--connections",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--out-json",
        &json_arg,
        "--out-plot",
        &svg_arg,
    ]);

    // Act
    let report = kurz_loadtests::run_and_report(args)
        .await
        .expect("run succeeds");

    // Assert
    let summary = &report.summary;
    assert!(
        summary.responses > 100,
        "only {} responses",
        summary.responses
    );
    assert_eq!(summary.transport_errors, 0);
    assert_eq!(summary.status_counts.get(&302), Some(&summary.responses));
    assert_eq!(summary.expected_responses, summary.responses);
    assert!(summary.latency_us.p50 > 0 && summary.latency_us.p50 <= summary.latency_us.max);
    // The sink saw the warm-up too, and the last in-flight requests are still counted.
    let served = sink.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(served > summary.responses, "{served} served");
    let written = read_json(&json);
    assert_eq!(u64_at(&written, "/summary/responses"), summary.responses);
    assert_eq!(
        written.pointer("/settings/mode"),
        Some(&Value::from("closed"))
    );
    assert_eq!(
        written.pointer("/expected_status/redirect"),
        Some(&Value::from("3xx"))
    );
    let seconds = written["timeseries"].as_array().expect("time series");
    assert_eq!(seconds.len(), 1, "a 1 s window has one second");
    assert_eq!(u64_at(&seconds[0], "/responses"), summary.responses);
    assert!(
        written["percentiles"]
            .as_array()
            .is_some_and(|p| p.len() > 10)
    );
    assert_svg(&svg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_sends_what_the_schedule_says() {
    // Arrange: 200 req/s for 1 s after 200 ms of warm-up is 200 measured requests.
    let sink = spawn_sink("127.0.0.1:0", SinkOptions::default())
        .await
        .expect("sink starts");
    let dir = TempDir::new().expect("temp dir");
    let (json, svg) = (dir.path().join("o.json"), dir.path().join("o.svg"));
    let (json_arg, svg_arg) = (json.display().to_string(), svg.display().to_string());
    let url = sink.url();
    let args = run_args(&[
        "--mode",
        "open",
        "--rate",
        "200",
        "--scenario",
        "redirect-miss",
        "--target",
        &url,
        "--connections",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--out-json",
        &json_arg,
        "--out-plot",
        &svg_arg,
    ]);

    // Act
    let report = kurz_loadtests::run_and_report(args)
        .await
        .expect("run succeeds");

    // Assert
    let summary = &report.summary;
    let unsent = summary
        .unsent_behind_schedule
        .expect("open mode reports unsent");
    assert_eq!(summary.requests + unsent, 200);
    assert!(summary.responses >= 190, "{} responses", summary.responses);
    // redirect-miss expects 404 and the sink answers 302: counted, and called unexpected.
    assert_eq!(summary.status_counts.get(&302), Some(&summary.responses));
    assert_eq!(summary.unexpected_responses, summary.responses);
    assert!(summary.send_lag_us.is_some());
    let written = read_json(&json);
    assert_eq!(
        written.pointer("/expected_status/redirect"),
        Some(&Value::from("404"))
    );
    assert_eq!(written.pointer("/settings/rate"), Some(&Value::from(200.0)));
    assert_svg(&svg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_charges_a_server_stall_to_the_requests_due_during_it() {
    // Arrange: the server holds every answer for 300 ms, starting 500 ms into the run.
    let stall = Some((Duration::from_millis(500), Duration::from_millis(300)));
    let sink = spawn_sink(
        "127.0.0.1:0",
        SinkOptions {
            stall,
            ..SinkOptions::default()
        },
    )
    .await
    .expect("sink starts");
    let url = sink.url();
    let args = run_args(&[
        "--mode",
        "open",
        "--rate",
        "200",
        "--scenario",
        "redirect-miss",
        "--target",
        &url,
        "--connections",
        "4",
        "--duration",
        "1200ms",
        "--warmup",
        "0s",
    ]);

    // Act
    let report = kurz_loadtests::run_and_report(args)
        .await
        .expect("run succeeds");

    // Assert: about 60 of 240 requests were due during the stall and each waited for its end,
    // so well over 1% of latencies are long, not just the 4 that were in flight.
    let latency = &report.summary.latency_us;
    assert!(latency.max >= 250_000, "max {} µs", latency.max);
    assert!(latency.p99 >= 200_000, "p99 {} µs", latency.p99);
    assert!(latency.p90 >= 50_000, "p90 {} µs", latency.p90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_writes_the_codes_of_created_links() {
    // Arrange
    let sink = spawn_sink("127.0.0.1:0", SinkOptions::default())
        .await
        .expect("sink starts");
    let dir = TempDir::new().expect("temp dir");
    let out = dir.path().join("codes.txt");
    let (url, out_arg) = (sink.url(), out.display().to_string());
    let cli = Cli::try_parse_from([
        "kurz-load",
        "seed",
        "--count",
        "100",
        "--create-target",
        &url,
        "--out",
        &out_arg,
        "--concurrency",
        "8",
    ])
    .expect("valid flags");
    let Some(Command::Seed(args)) = cli.command else {
        panic!("seed subcommand expected");
    };

    // Act
    let written = kurz_loadtests::run_seed(args)
        .await
        .expect("seeding succeeds");

    // Assert
    assert_eq!(written, 100);
    let codes = kurz_loadtests::codes::load_codes(&out).expect("codes readable");
    assert_eq!(codes.len(), 100);
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_carry_the_api_key_and_no_output_shows_it() {
    // Arrange: a sink that answers 401 to creates without this key.
    const KEY: &str = "kurz_load_test_key_0123456789";
    let options = SinkOptions {
        api_key: Some(KEY),
        ..SinkOptions::default()
    };
    let sink = spawn_sink("127.0.0.1:0", options)
        .await
        .expect("sink starts");
    let dir = TempDir::new().expect("temp dir");
    let json = dir.path().join("c.json");
    let (url, json_arg) = (sink.url(), json.display().to_string());
    let mut cli = Cli::try_parse_from([
        "kurz-load",
        "--scenario",
        "create",
        "--create-target",
        &url,
        "--connections",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--out-json",
        &json_arg,
    ])
    .expect("valid flags");
    // As if KURZ_LOAD_API_KEY were set: the key is not on the command line.
    cli.api_key_from_env(Some(std::ffi::OsStr::new(KEY)))
        .expect("valid key");

    // Act
    let report = kurz_loadtests::run_and_report(cli.run)
        .await
        .expect("run succeeds");

    // Assert: every create was let in, and neither the summary nor the JSON has the key.
    let summary = &report.summary;
    assert!(summary.responses > 10, "{} responses", summary.responses);
    assert_eq!(summary.status_counts.get(&201), Some(&summary.responses));
    let mut printed = Vec::new();
    report.print(&mut printed).expect("summary printed");
    let printed = String::from_utf8(printed).expect("UTF-8 summary");
    assert!(printed.contains("with an API key"), "{printed}");
    let written = std::fs::read_to_string(&json).expect("JSON report written");
    assert_eq!(
        read_json(&json).pointer("/settings/api_key"),
        Some(&Value::Bool(true))
    );
    assert!(!printed.contains(KEY) && !written.contains(KEY));
}

#[tokio::test]
async fn seeding_a_server_that_is_not_there_fails() {
    // Arrange: a port that was just free, so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = TempDir::new().expect("temp dir");
    let args = SeedArgs {
        count: 5,
        create_target: format!("http://127.0.0.1:{port}"),
        out: dir.path().join("codes.txt"),
        api_key: None,
        concurrency: 2,
        timeout: Duration::from_secs(2),
        run_id: None,
        threads: None,
    };

    // Act
    let result = kurz_loadtests::run_seed(args).await;

    // Assert
    let error = result.expect_err("nothing to seed");
    assert!(error.to_string().contains("connect"), "{error:#}");
}

#[tokio::test]
async fn a_non_loopback_target_is_refused_before_any_request() {
    // Arrange
    let args = run_args(&[
        "--scenario",
        "redirect-miss",
        "--target",
        "http://10.1.2.3:8080",
    ]);

    // Act
    let result = kurz_loadtests::run_and_report(args).await;

    // Assert
    let error = result.expect_err("refused");
    assert!(error.to_string().contains("not loopback"), "{error:#}");
}
