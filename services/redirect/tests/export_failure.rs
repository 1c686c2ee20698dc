//! A collector that accepts connections and never answers must not slow requests down or keep
//! the service from stopping.
//!
//! Its own test binary: it installs the process-wide subscriber.

use std::time::Duration;

use kurz_redirect::{Application, Settings};
use kurz_repository::{LinkRepository, NewLink};
use kurz_settings::Source;
use kurz_testkit::{Fault, FaultProxy, OtlpSink, RunningApp, TestEnv, http_client};

#[tokio::test]
async fn a_blackholed_collector_neither_fails_requests_nor_hangs_shutdown() {
    let env = TestEnv::start().await;
    let sink = OtlpSink::start().await;
    let collector: std::net::SocketAddr = sink
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let proxy = FaultProxy::start(collector).await;
    proxy.set(Fault::Blackhole);
    let source: Source = env
        .source()
        .with(
            "KURZ_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", proxy.port()),
        )
        .with("KURZ_LOG", "warn");
    let settings = Settings::from_source(&source).expect("valid settings");
    let telemetry = kurz_telemetry::init("kurz-redirect", &settings.telemetry).expect("telemetry");
    let app = Application::build(settings).await.expect("redirect starts");
    let app = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));
    let repo = env.repository();
    let link = NewLink {
        target_url: "https://example.com/exported".to_owned(),
        expires_at: None,
        owner_id: None,
        behaviour: Default::default(),
    };
    repo.insert_with_alias("exported", &link)
        .await
        .expect("insert");

    // Enough requests to fill several export batches while the collector swallows them.
    let client = http_client();
    for n in 0..300 {
        let response = client
            .get(app.url("/exported"))
            .header(
                "traceparent",
                format!("00-{:032x}-00f067aa0ba902b7-01", n + 1),
            )
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 302, "request {n}");
    }

    // Stopping flushes what it can and gives up on the collector within its bound (the
    // exporter's 3 s timeout, the 5 s shutdown limit); a minute means it hangs.
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        app.stop().await.expect("stops");
        telemetry.shutdown().await;
    })
    .await;
    assert!(stopped.is_ok(), "shutdown hung on the silent collector");
    assert!(sink.spans().is_empty(), "the blackhole let nothing through");
}
